"""sigmapot: an uncertainty-aware machine-learned interatomic potential for ASE and LAMMPS."""
__version__ = "0.1.0"

from .calculator import SigmaCalculator  # noqa: E402

__all__ = ["SigmaCalculator", "__version__"]
