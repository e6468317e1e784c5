"""ASE molecular dynamics of hot Si with a sigmapot model, reporting the per-atom uncertainty.

Usage: python examples/ase/md_uncertainty.py MODEL.pt [--steps 200] [--temperature 1200]
"""
import argparse

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from sigmapot import SigmaCalculator

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--temperature", type=float, default=1200.0)
args = parser.parse_args()

atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
atoms.calc = SigmaCalculator(args.model)
thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=args.temperature, friction=0.02,
               rng=np.random.default_rng(1))

worst = {"sigma_F": 0.0, "step": -1, "atom": -1}


def report():
    step = dyn.nsteps
    sigma_f = atoms.calc.results["forces_std"]
    k = int(np.argmax(sigma_f))
    if sigma_f[k] > worst["sigma_F"]:
        worst.update(sigma_F=float(sigma_f[k]), step=step, atom=k)
    if step % 50 == 0:
        print(f"step {step:5d}  T {atoms.get_temperature():7.1f} K  E {atoms.get_potential_energy():11.4f} eV"
              f"  max sigma_F {sigma_f.max():.4f} eV/A  mean sigma_F {sigma_f.mean():.4f} eV/A"
              f"  sigma_E(total) {atoms.calc.results['energy_std']:.4f} eV")


dyn.attach(report, interval=1)
dyn.run(args.steps)
print(f"largest per-atom force uncertainty: {worst['sigma_F']:.4f} eV/A (atom {worst['atom']}, "
      f"step {worst['step']}) over {args.steps} steps at {args.temperature:.0f} K")
