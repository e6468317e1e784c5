"""The sigmapot potential: a strictly local, many-body ensemble of M members evaluated in one call.

Descriptor (per atom i, per member m, per radial channel k), in the spirit of moment tensor / ACE /
Gaussian-multipole descriptors:

    A^(l)_{ik} = sum_{j in r_c} R_k(r_ij, z_j) u_ij^{(x)l},   l = 0..3,  u = r_ij / |r_ij|

with learnable radial channels R_k (a Bessel basis times a smooth envelope, mixed linearly by a matrix
per neighbour element).  Rotation invariants of body order 2..5 are contracted from the moments
(A0, A1.A1', A2:A2', A3:A3', A1.A2'.A1, tr(A2 A2' A2), A1.(A3':A2), A1.A2A2.A1, |A3':A2|^2, tr(A2^4);
a prime marks a learnable channel mix) and fed, with the centre's element, to a per-member MLP that
gives the atomic energy.  The three body-order-5 terms reuse products the others already form; they
cut the Si test energy error by 10 % at unchanged force error (docs/experiments.md).

All members are held as batched parameters with a leading member dimension, so one call evaluates the
whole ensemble with a few batched matrix products.  Forces, virials and per-member forces come from
autograd w.r.t. the edge vectors r_ij (see `forward`), which is what makes one code path serve ASE
(periodic images as shifted edge vectors) and LAMMPS (ghost atoms).
"""

import math
from typing import Dict, Final, List, Optional, Tuple

import torch
from torch import nn

from .config import ModelConfig

# Of the exported file; 2: forward() takes with_virial; 3: may call the compiled operators
# (torch.ops.sigmapot, sigmapot.ops); 4: may call sigmapot::edge_basis, atom_energies and
# edge_vector_gradients (the whole model in three compiled passes); 5: may call sigmapot::edge_forces.
# Readers accept MIN_FORMAT_VERSION..FORMAT_VERSION.
FORMAT_VERSION = 5
MIN_FORMAT_VERSION = 2

# Symmetric Cartesian monomials of a unit vector up to degree 3: column c of `_monomials` is
# prod_a u_a^{_POWERS[c][a]}.  Moments are accumulated on these 20 columns, then expanded to full
# 3, 3x3, 3x3x3 tensors with the index maps below.
_POWERS = [
    (0, 0, 0),
    (1, 0, 0), (0, 1, 0), (0, 0, 1),
    (2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2),
    (3, 0, 0), (2, 1, 0), (2, 0, 1), (1, 2, 0), (1, 1, 1), (1, 0, 2), (0, 3, 0), (0, 2, 1), (0, 1, 2),
    (0, 0, 3),
]


def _compact(*axes: int) -> int:
    """Index of the symmetric component (a, b, ...) among the compact components of its rank."""
    powers = [0, 0, 0]
    for a in axes:
        powers[a] += 1
    first = {1: 1, 2: 4, 3: 10}[len(axes)]
    return _POWERS.index(tuple(powers)) - first


def _contraction_tables() -> Dict[str, list]:
    """Gather indices and multinomial weights for contracting compact symmetric tensors."""
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]          # compact rank-2 order
    weights2 = [1.0 if a == b else 2.0 for a, b in pairs]
    weights3 = [6.0 / math.prod(math.factorial(p) for p in pw) for pw in _POWERS[10:]]
    return {
        "weights2": weights2,
        "weights3": weights3,
        "pair_first": [a for a, _ in pairs],
        "pair_second": [b for _, b in pairs],
        # (a2 a2)_ac = sum_b a2_ab a2_bc, for each compact (a, c) and b = 0..2
        "square_left": [_compact(a, b) for a, c in pairs for b in range(3)],
        "square_right": [_compact(b, c) for a, c in pairs for b in range(3)],
        # (b3 : a2)_a = sum_bc b3_abc a2_bc, for each a and compact (b, c)
        "vector_b3": [_compact(a, b, c) for a in range(3) for b, c in pairs],
        "vector_a2": [_compact(b, c) for _ in range(3) for b, c in pairs],
    }


def _envelope(r: torch.Tensor, cutoff: float, p: float) -> torch.Tensor:
    """Polynomial envelope of the radial basis: C^2-smooth, 1 at r = 0, exactly zero for r >= rc."""
    x = (r / cutoff).clamp(max=1.0)
    env = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p) + p * (p + 2.0) * x.pow(p + 1.0)
           - p * (p + 1.0) / 2.0 * x.pow(p + 2.0))
    return torch.where(r < cutoff, env, torch.zeros_like(env))


def _component_major(basis: torch.Tensor) -> torch.Tensor:
    """Atom-major basis moments (G, n, 20, B) -> component-major (G, 20 * n, B) (see _invariants)."""
    G, n, B = basis.shape[0], basis.shape[1], basis.shape[3]
    return basis.transpose(1, 2).reshape(G, 20 * n, B)


def _pad(values: torch.Tensor, flat: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Per-edge values (G, E, C) into the padded (atom, slot) layout (G, n, width, C); empty slots 0."""
    G, C = values.shape[0], values.shape[-1]
    return values.new_zeros(G, n * width, C).index_copy(1, flat, values).view(G, n, width, C)


def bessel_basis(r: torch.Tensor, cutoff: float, num_radial: int, envelope_p: int) -> torch.Tensor:
    """sqrt(2/rc) sin(n pi r / rc) / r times a polynomial envelope that is C^2-smooth and zero at rc.

    Finite at r -> 0 (the sine removes the 1/r pole), exactly zero for r >= rc.
    """
    n = torch.arange(1, num_radial + 1, dtype=r.dtype, device=r.device)
    env = _envelope(r, cutoff, float(envelope_p))
    r_safe = r.clamp(min=1e-4 * cutoff).unsqueeze(-1)
    arg = n * math.pi / cutoff * r_safe
    return math.sqrt(2.0 / cutoff) * torch.sin(arg) / r_safe * env.unsqueeze(-1)


def bessel_basis_derivative(r: torch.Tensor, cutoff: float, num_radial: int, envelope_p: int) -> torch.Tensor:
    """d/dr of `bessel_basis`, written out (the analytic force path): (..., num_radial)."""
    n = torch.arange(1, num_radial + 1, dtype=r.dtype, device=r.device)
    x = (r / cutoff).clamp(max=1.0)
    p = float(envelope_p)
    inside = r < cutoff
    env = _envelope(r, cutoff, p)
    # d env / dr = -p (p+1) (p+2) / (2 rc) x^(p-1) (1-x)^2
    denv = -p * (p + 1.0) * (p + 2.0) / (2.0 * cutoff) * x.pow(p - 1.0) * (1.0 - x).square()
    denv = torch.where(inside, denv, torch.zeros_like(denv))
    r_min = 1e-4 * cutoff
    r_safe = r.clamp(min=r_min).unsqueeze(-1)
    k = n * math.pi / cutoff
    sin, cos = torch.sin(k * r_safe), torch.cos(k * r_safe)
    dsinc = (k * cos * r_safe - sin) / r_safe.square() * (r >= r_min).to(r.dtype).unsqueeze(-1)
    return math.sqrt(2.0 / cutoff) * (dsinc * env.unsqueeze(-1) + sin / r_safe * denv.unsqueeze(-1))


def _monomial_derivative_table() -> List[List[float]]:
    """(20, 30) matrix C with dY_c/du_a = sum_d C[c, 10 a + d] Y_d: each monomial's derivative is a
    monomial of degree <= 2 (the first 10 columns of `_monomials`) times its power."""
    table = [[0.0] * 30 for _ in _POWERS]
    for c, powers in enumerate(_POWERS):
        for a in range(3):
            if powers[a] > 0:
                lower = list(powers)
                lower[a] -= 1
                table[c][10 * a + _POWERS.index(tuple(lower))] = float(powers[a])
    return table


class SigmaModel(nn.Module):
    """Ensemble of `ensemble_size` independent moment-tensor networks (batched parameters).

    TorchScript-compatible: `sigmapot.export` scripts an instance of this class as it is.
    """

    format_version: int
    model_kind: str
    cutoff: float
    ensemble_size: int
    num_radial: int
    num_channels: int
    envelope_p: int
    num_elements: int
    num_layers: int
    shared_descriptor: bool
    elements: List[str]
    dtype_name: str
    metadata_json: str
    # The compiled operators on CPU (sigmapot.ops), set by export when the library is loaded.  Final:
    # TorchScript compiles only the branch taken, so a file exported without the operators never names
    # them.  Training keeps the PyTorch path (it needs a double backward).
    use_ops: Final[bool]

    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        config.validate()
        self.format_version = FORMAT_VERSION
        self.model_kind = "sigmapot"
        self.elements = list(config.elements)
        self.num_elements = len(self.elements)
        self.cutoff = float(config.cutoff)
        self.ensemble_size = int(config.ensemble_size)
        self.num_radial = int(config.num_radial)
        self.num_channels = int(config.num_channels)
        self.envelope_p = int(config.envelope_p)
        self.dtype_name = "float64"
        self.metadata_json = "{}"
        self.use_ops = False

        gen = torch.Generator().manual_seed(seed)
        M, K, Z, Nb = self.ensemble_size, self.num_channels, self.num_elements, self.num_radial
        # A shallow ensemble shares one descriptor (radial channels and mixes) between the members and
        # keeps M readout heads; a deep ensemble (default) gives every member its own descriptor.
        self.shared_descriptor = bool(config.shared_descriptor)
        Md = 1 if self.shared_descriptor else M

        def uniform(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale)

        # One radial weight matrix per neighbour element (rows z*Nb..z*Nb+Nb-1 act on element z).
        self.radial_weight = uniform(Md, Z * Nb, K, scale=math.sqrt(3.0 / Nb))
        # channel mixes for ranks 1, 2, 3 (identity plus noise: starts from the "diagonal" invariants)
        eye = torch.eye(K, dtype=torch.float64).expand(3, Md, K, K)
        self.channel_mix = nn.Parameter(eye + uniform(3, Md, K, K, scale=0.3 / math.sqrt(K)).data)

        num_features = 10 * K
        widths = [num_features + Z] + list(config.hidden) + [1]
        self.mlp = nn.ModuleList(
            [EnsembleLinear(uniform(M, w_in, w_out, scale=math.sqrt(6.0 / (w_in + w_out))
                                    if w_out > 1 else 0.01))
             for w_in, w_out in zip(widths[:-1], widths[1:])])
        self.num_layers = len(self.mlp)

        # Statistics fit from the training data (see `fit_statistics`), kept as buffers.
        self.register_buffer("reference_energy", torch.zeros(Z, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("avg_num_neighbors", torch.ones((), dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(Md, 1, num_features, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(Md, 1, num_features, dtype=torch.float64))
        # Calibration (see sigmapot.calibrate): sigma_F = sqrt((a raw^b)^2 + c^2), sigma_E = s * raw,
        # interval = q * sigma_F; stored as [a, b, s, q, c]
        self.register_buffer("calibration", torch.tensor([1.0, 1.0, 1.0, 1.645, 0.0], dtype=torch.float64))

        for name, values in _contraction_tables().items():
            dtype = torch.float64 if name.startswith("weights") else torch.long
            self.register_buffer(name, torch.tensor(values, dtype=dtype))
        self.register_buffer("monomial_derivative",
                             torch.tensor(_monomial_derivative_table(), dtype=torch.float64), persistent=False)

    # ------------------------------------------------------------------ descriptor and energies
    def _monomials(self, u: torch.Tensor) -> torch.Tensor:
        """(..., 3) unit vectors -> (..., 20) monomials u_x^a u_y^b u_z^c for a+b+c <= 3."""
        ux, uy, uz = u[..., 0:1], u[..., 1:2], u[..., 2:3]
        one = torch.ones_like(ux)
        xx, yy, zz, xy, xz, yz = ux * ux, uy * uy, uz * uz, ux * uy, ux * uz, uy * uz
        return torch.cat([one, ux, uy, uz, xx, xy, xz, yy, yz, zz,
                          xx * ux, xx * uy, xx * uz, yy * ux, xy * uz, zz * ux, yy * uy, yy * uz,
                          zz * uy, zz * uz], dim=-1)

    def descriptors(self, species: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                    vec: torch.Tensor, n_local: int) -> torch.Tensor:
        """Invariant features (M', n_local, 10K), standardised.  `vec` is (G, E, 3) with G = 1 (one
        geometry shared by all members) or G = M (a copy per member, for per-member forces);
        M' = 1 for a shared descriptor on shared geometry, else M."""
        return self.features(self.basis_moments(species, center, neighbor, vec, n_local), n_local)

    def basis_moments(self, species: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                      vec: torch.Tensor, n_local: int) -> torch.Tensor:
        """Neighbour sums of the 20 monomials times the radial basis functions, (G, 20 * n_local, B)
        component-major (see _invariants): the only part of the model that sees the edges."""
        r, u, phi, ylm = self._edge_terms(species, neighbor, vec)
        flat, width = self._slots(center, n_local)
        return _component_major(self._neighbour_sums(phi, ylm, flat, width, n_local)[0])

    def _edge_terms(self, species: torch.Tensor, neighbor: torch.Tensor,
                    vec: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edge lengths r (G, E), directions u (G, E, 3), radial basis (G, E, B) in the block of j's
        element, and monomials (G, E, 20)."""
        r = torch.linalg.vector_norm(vec, dim=-1)                                 # (G, E)
        u = vec / r.clamp(min=1e-4 * self.cutoff).unsqueeze(-1)
        # 1/avg_num_neighbors folded into the basis keeps the moments O(1) at no extra pass.
        phi = bessel_basis(r, self.cutoff, self.num_radial, self.envelope_p) / self.avg_num_neighbors
        return r, u, self._element_blocks(phi, species, neighbor), self._monomials(u)

    def _element_blocks(self, phi: torch.Tensor, species: torch.Tensor, neighbor: torch.Tensor) -> torch.Tensor:
        """(G, E, Nb) -> (G, E, Z*Nb): each edge's radial values in the block of its neighbour's element."""
        if self.num_elements == 1:
            return phi
        onehot = torch.nn.functional.one_hot(species[neighbor], self.num_elements).to(phi.dtype)
        return (onehot.unsqueeze(-1) * phi.unsqueeze(-2)).flatten(-2)

    def _slots(self, center: torch.Tensor, n_local: int) -> Tuple[torch.Tensor, int]:
        """Each edge's (atom, slot) position in a padded (n_local, width) layout, in the caller's edge
        order, and the width: the neighbour sums then are batched matmuls."""
        order = torch.argsort(center, stable=True)
        center_sorted = center[order]
        counts = torch.bincount(center_sorted, minlength=n_local)
        width = int(counts.max()) if center.numel() > 0 else 1
        width = max(width, 1)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(center.numel(), device=center.device) - start[center_sorted]
        flat = torch.empty_like(order).index_copy_(0, order, center_sorted * width + slot)
        return flat, width

    def _neighbour_sums(self, phi: torch.Tensor, ylm: torch.Tensor, flat: torch.Tensor, width: int,
                        n_local: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Basis moments (G, n_local, 20, B) (atom-major), and the padded basis (G, n, width, B) and
        monomials (G, n, width, 20) they were summed from."""
        phi_pad, ylm_pad = _pad(phi, flat, n_local, width), _pad(ylm, flat, n_local, width)
        # The radial channel mix is linear, so it commutes with the neighbour sum: sum the monomials
        # against the Nb basis functions first (n, 20, Nb), then mix to K channels with one large matmul.
        # The per-edge (E, K) radial tensor is never formed; the batched sums are K/Nb times smaller.
        return torch.matmul(ylm_pad.transpose(2, 3), phi_pad), phi_pad, ylm_pad     # (G, n, 20, B)

    def _edge_gradients(self, g: torch.Tensor, species: torch.Tensor, neighbor: torch.Tensor,
                        vec: torch.Tensor, r: torch.Tensor, u: torch.Tensor, phi_pad: torch.Tensor,
                        ylm_pad: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """dE/dr_ij (G', E, 3) from g = dE/d(basis moments) (G', n, 20, B): the chain rule through
        the neighbour sums, monomials and radial basis written out, so that no autograd graph is kept
        over the edges, and all G' (members) in one batched pass."""
        Gp = g.shape[0]
        n, width = phi_pad.shape[1], phi_pad.shape[2]
        dphi = bessel_basis_derivative(r, self.cutoff, self.num_radial, self.envelope_p) / self.avg_num_neighbors
        dphi_pad = _pad(self._element_blocks(dphi, species, neighbor), flat, n, width)
        slots = self.slot_gradients(g, ylm_pad[0], phi_pad[0], dphi_pad[0])
        per_edge = slots.view(Gp, n * width, 4).index_select(1, flat)           # only 4 numbers per edge
        g_u, g_r = per_edge[..., :3], per_edge[..., 3]                           # (G', E, 3), (G', E)
        # u = r_ij / max(|r_ij|, r_min), |r_ij|: du/dr_ij = (1 - u u^T) / |r_ij|, d|r_ij|/dr_ij = u
        r_min = 1e-4 * self.cutoff
        far = (r >= r_min).unsqueeze(-1)
        tangential = torch.where(far, g_u - u * (u * g_u).sum(-1, keepdim=True), g_u)
        return tangential / r.clamp(min=r_min).unsqueeze(-1) + g_r.unsqueeze(-1) * vec / r.clamp(
            min=1e-30).unsqueeze(-1)

    def slot_gradients(self, g: torch.Tensor, ylm_pad: torch.Tensor, phi_pad: torch.Tensor,
                       dphi_pad: torch.Tensor) -> torch.Tensor:
        """Per (atom, slot) of the padded layout, (G', n, width, 4): dE/du_a (a = x, y, z) and dE/d|r|
        of the slot's edge, from g = dE/d(basis moments) (G', n, 20, B), the slot's monomials
        (n, width, 20), radial basis and its r-derivative (n, width, B).  The PyTorch path, and the
        reference of the compiled operator torch.ops.sigmapot.edge_gradients (which files of format 3
        call)."""
        Gp, n, width = g.shape[0], phi_pad.shape[0], phi_pad.shape[1]
        # Monomials: dY_c/du_a = sum_d C[c, 10 a + d] Y_d (degree <= 2), folded into g per atom first:
        # dE/du_a = sum_{d,b} (sum_c C[c, 10 a + d] g[i, c, b]) phi_b(r_ij) Y_d(u_ij).
        g_deriv = torch.matmul(self.monomial_derivative.t(), g)                   # (G', n, 30, B)
        t = torch.matmul(phi_pad, g_deriv.transpose(2, 3)).view(Gp, n, width, 3, 10)
        g_u = (t * ylm_pad[..., :10].unsqueeze(-2)).sum(-1)                       # (G', n, width, 3)
        # radial basis: dE/d|r_ij| = sum_b (sum_c g[i, c, b] Y_c(u_ij)) dphi_b/dr
        g_r = (torch.matmul(ylm_pad, g) * dphi_pad).sum(-1, keepdim=True)        # (G', n, width, 1)
        return torch.cat([g_u, g_r], -1)

    def features(self, basis_moments: torch.Tensor, n_local: int) -> torch.Tensor:
        """Invariant features (M', n_local, 10K) from basis moments (G, 20 * n_local, B)."""
        G, Md, K = basis_moments.shape[0], self.radial_weight.shape[0], self.num_channels
        # One geometry shared by the members (G = 1) broadcasts over them: written straight into the
        # component-major (M', 20, n, K) layout (a matmul to M*K channels needs a permuting copy).
        moments = torch.matmul(basis_moments, self.radial_weight).view(max(G, Md), 20, n_local, K)
        return self._invariants(moments)

    def _invariants(self, moments: torch.Tensor) -> torch.Tensor:
        """Body-order 2-5 rotation invariants from compact symmetric moments (M', 20, n, K).

        Component-major layout: each Cartesian component is one contiguous (n, K) block, so the
        rank blocks are free views, the gathers along the component axis copy whole blocks and every
        product is a long vectorised pass (faster than (M', n, 20, K), also in the double backward of
        training: docs/experiments.md).  Symmetric tensors stay compact (6 and 10 components,
        contracted with multinomial weights).
        """
        K = self.num_channels
        Mm, n = moments.shape[0], moments.shape[2]
        # split (not slicing): its backward is one cat instead of a zero-filled copy per slice
        _, a1, a2, a3 = moments.split([1, 3, 6, 10], dim=1)
        mix = self.channel_mix
        if mix.shape[1] != Mm:  # shared mixes on per-member geometry
            mix = mix.expand(3, Mm, K, K)
        b1 = torch.bmm(a1.reshape(Mm, 3 * n, K), mix[0]).view(Mm, 3, n, K)
        b2 = torch.bmm(a2.reshape(Mm, 6 * n, K), mix[1]).view(Mm, 6, n, K)
        b3 = torch.bmm(a3.reshape(Mm, 10 * n, K), mix[2]).view(Mm, 10, n, K)
        return (self.invariant_products(moments, b1, b2, b3) - self.feature_mean) / self.feature_std

    def invariant_products(self, moments: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor,
                           b3: torch.Tensor) -> torch.Tensor:
        """The invariants (M', n, 10K), unstandardised, from the moments and the mixed b1, b2, b3: the
        PyTorch path (training, CUDA), and the reference of the compiled rows (sigmapot::invariants,
        which files of format 3 call, and sigmapot::atom_energies)."""
        K = self.num_channels
        Mm, n = moments.shape[0], moments.shape[2]
        a0, a1, a2, a3 = moments.split([1, 3, 6, 10], dim=1)
        a0 = a0.squeeze(1)
        # Multinomial weights applied once to a rank-2/3 factor rather than inside each product.
        w2 = self.weights2.view(6, 1, 1)
        b2w, a2w = b2 * w2, a2 * w2
        a1a1 = a1.index_select(1, self.pair_first) * a1.index_select(1, self.pair_second)
        a2a2 = (a2.index_select(1, self.square_left)
                * a2.index_select(1, self.square_right)).view(Mm, 6, 3, n, K).sum(2)
        b3a2 = (b3.index_select(1, self.vector_b3)
                * a2w.index_select(1, self.vector_a2)).view(Mm, 3, 6, n, K).sum(2)
        feats = [
            a0,
            (a1 * b1).sum(1),
            (a2 * b2w).sum(1),
            (a3 * b3 * self.weights3.view(10, 1, 1)).sum(1),
            (a1a1 * b2w).sum(1),                # a1 . b2 . a1
            (a2a2 * b2w).sum(1),                # tr(a2 b2 a2)
            (a1 * b3a2).sum(1),                 # a1 . (b3 : a2)
            (a1a1 * a2a2 * w2).sum(1),          # a1 . a2 a2 . a1   (body order 5)
            (b3a2 * b3a2).sum(1),               # |b3 : a2|^2
            (a2a2 * a2a2 * w2).sum(1),          # tr(a2^4)
        ]
        return torch.cat(feats, dim=-1)

    def readout(self, species: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-member MLP on [features, one-hot element] -> atomic energies (M, n)."""
        h = self.mlp[-1](self.last_hidden(species, x))
        return self.reference_energy[species] + self.energy_scale * h.squeeze(-1)

    def last_hidden(self, species: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The readout's last hidden layer (M, n, H), from which each member's atomic energy is linear."""
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(x.dtype)
        x = x.expand(self.ensemble_size, -1, -1)
        h = torch.cat([x, onehot.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=-1)
        for i, layer in enumerate(self.mlp):
            if i < self.num_layers - 1:
                h = torch.nn.functional.silu(layer(h))
        return h

    def atomic_energies(self, species: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                        vec: torch.Tensor, n_local: int) -> torch.Tensor:
        """Per-member energies (M, n_local) of atoms 0..n_local-1; `vec` is (1, E, 3) or (M, E, 3)."""
        x = self.descriptors(species, center, neighbor, vec, n_local)
        return self.readout(species[:n_local], x)

    def _energies_and_edge_gradients(self, species: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                                     edge_vec: torch.Tensor, n_local: int,
                                     with_members: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-member energies (M, n_local) and dE/dr_ij (G', E, 3), per member (G' = M) with
        `with_members`, else of the members' summed energy (G' = 1).  On CPU in an exported file: three
        compiled operators (edge basis, atom level, edge gradients); else the PyTorch path."""
        if self.use_ops:
            if edge_vec.device.type == "cpu":
                neighbor_species = species[neighbor]
                scale = 1.0 / float(self.avg_num_neighbors.item())
                basis = torch.ops.sigmapot.edge_basis(edge_vec, center, neighbor_species, n_local, self.num_elements,
                                                      self.cutoff, self.num_radial, self.envelope_p, scale)
                weights: List[torch.Tensor] = []
                biases: List[torch.Tensor] = []
                for layer in self.mlp:
                    weights.append(layer.weight)
                    biases.append(layer.bias)
                local = species[:n_local]
                h, grad = torch.ops.sigmapot.atom_energies(
                    basis, self.radial_weight, self.channel_mix, self.feature_mean, self.feature_std,
                    weights, biases, local, float(self.energy_scale.item()), with_members)
                dE_dr = torch.ops.sigmapot.edge_vector_gradients(grad, edge_vec, center, neighbor_species,
                                                                 self.num_elements, self.cutoff, self.num_radial,
                                                                 self.envelope_p, scale)
                return self.reference_energy[local] + self.energy_scale * h, dE_dr
            return self._energies_and_edge_gradients_reference(species, center, neighbor, edge_vec, n_local,
                                                               with_members)
        return self._energies_and_edge_gradients_reference(species, center, neighbor, edge_vec, n_local,
                                                           with_members)

    def _energies_and_edge_gradients_reference(self, species: torch.Tensor, center: torch.Tensor,
                                               neighbor: torch.Tensor, edge_vec: torch.Tensor, n_local: int,
                                               with_members: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """`_energies_and_edge_gradients` in PyTorch (CUDA, files without the operators, and the reference
        of the operators).  The edge-level forward (basis, monomials, neighbour sums) runs outside
        autograd; `atom_energies_reference` gives the energies and their gradient w.r.t. the basis
        moments, and from there to the edge vectors the chain rule is written out (`_edge_gradients`)."""
        vec = edge_vec.unsqueeze(0)
        with torch.no_grad():
            r, u, phi, ylm = self._edge_terms(species, neighbor, vec)
            flat, width = self._slots(center, n_local)
            basis, phi_pad, ylm_pad = self._neighbour_sums(phi, ylm, flat, width, n_local)
        member_energy, grad = self.atom_energies_reference(species[:n_local], basis[0], with_members)
        return member_energy, self._edge_gradients(grad, species, neighbor, vec, r, u, phi_pad, ylm_pad, flat)

    def atom_energies_reference(self, species: torch.Tensor, basis: torch.Tensor,
                                with_members: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-member energies (M, n) and dE/d(basis moments) (G', n, 20, B) from the basis moments
        (n, 20, B), per member (G' = M) or summed over the members (G' = 1): training's operations, and
        the reference of sigmapot::atom_energies.  The radial mix runs outside autograd, autograd from the
        moments through the channel mixes, invariants and readout, and one matmul back to the basis
        moments."""
        M, n, K = self.ensemble_size, basis.shape[0], self.num_channels
        with torch.no_grad():
            moments = torch.matmul(_component_major(basis.unsqueeze(0)), self.radial_weight)   # (M', 20 n, K)
        # A member's energy depends on its own moments only, so one backward pass gives every member's
        # gradient (a shared descriptor needs a copy per member).
        if with_members and moments.shape[0] < M:
            moments = moments.expand(M, -1, -1).clone()
        moments.requires_grad_(True)
        x = self._invariants(moments.view(moments.shape[0], 20, n, K))
        member_energy = self.readout(species, x)
        grad = torch.autograd.grad([member_energy.sum()], [moments], allow_unused=True)[0]
        if grad is None:  # no atoms
            grad = torch.zeros_like(moments)
        # to the basis moments: per member, or summed over the members for the mean force
        grad = torch.matmul(grad, self.radial_weight.transpose(1, 2))           # (M', 20 n, B)
        if not with_members:
            grad = grad.sum(0, keepdim=True)
        B = grad.shape[-1]
        return member_energy.detach(), grad.view(grad.shape[0], 20, n, B).transpose(1, 2).contiguous()

    # ------------------------------------------------------------------ the exported entry points
    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor,
                n_local: int, with_members: bool, with_virial: bool = True) -> Dict[str, torch.Tensor]:
        """Energies, forces, virials (and per-member values) from a neighbour list; see
        docs/model_interface.md.  Must not run under torch.inference_mode: the PyTorch path's atom-level
        part is autograd.
        `with_virial=False` skips the three virial outputs (an MD step that needs no pressure)."""
        self._check_inputs(species, edge_index, edge_vec, n_local)
        M = self.ensemble_size
        n_all = species.shape[0]
        center, neighbor = edge_index[0], edge_index[1]
        member_energy, dE_dr = self._energies_and_edge_gradients(species, center, neighbor, edge_vec, n_local,
                                                                  with_members)
        members: Dict[str, torch.Tensor] = {}
        if with_members:
            # forces are linear in dE/dr: the mean force is the mean of the member forces (one scatter)
            member_forces = self._edge_forces(dE_dr, center, neighbor, n_all)
            members["member_energy"] = member_energy
            members["member_forces"] = member_forces
            forces = member_forces.mean(0)
        else:
            forces = self._edge_forces(dE_dr, center, neighbor, n_all)[0] / M   # of the members' summed energy

        out: Dict[str, torch.Tensor] = {"energy": member_energy.mean(0), "forces": forces}
        if with_virial:
            mean_grad = dE_dr.mean(0) if with_members else dE_dr[0] / M
            out.update(edge_virials(edge_vec, mean_grad, center, neighbor, n_all))
        out.update(members)
        return out

    def _edge_forces(self, dE_dr: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                     n_all: int) -> torch.Tensor:
        """Atom forces (G, n_all, 3) of each row of dE/dr_ij (G, E, 3): the compiled scatter on CPU in an
        exported file (sigmapot::edge_forces, the same sums), else `edge_forces`."""
        if self.use_ops:
            if dE_dr.device.type == "cpu":
                return torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, n_all)
        return edge_forces(dE_dr, center, neighbor, n_all)

    @torch.jit.export
    def uncertainty(self, member_energy: torch.Tensor, member_forces: torch.Tensor,
                    member_total_energy: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Calibrated per-atom and total uncertainties from complete member values (see module doc)."""
        a_force, b_force, s_energy, q_force, c_force = (self.calibration[0], self.calibration[1],
                                                        self.calibration[2], self.calibration[3],
                                                        self.calibration[4])
        spread = member_forces - member_forces.mean(0, keepdim=True)
        raw_force = spread.square().sum(-1).mean(0).sqrt()
        force_std = (a_force * raw_force.pow(b_force)).square().add(c_force * c_force).sqrt()
        raw_energy = (member_energy - member_energy.mean(0, keepdim=True)).square().mean(0).sqrt()
        total = member_total_energy - member_total_energy.mean()
        return {
            "energy_std": s_energy * raw_energy,
            "force_std": force_std,
            "total_energy_std": s_energy * total.square().mean().sqrt(),
            "force_interval": q_force * force_std,
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "calibration"
        if key in state_dict and state_dict[key].numel() == 4:     # written before the force floor c: c = 0
            state_dict[key] = torch.cat([state_dict[key], state_dict[key].new_zeros(1)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_inputs(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor,
                      n_local: int) -> None:
        n_all = species.shape[0]
        if n_local < 0 or n_local > n_all:
            raise ValueError(f"n_local={n_local} must lie in [0, {n_all}] (number of atoms)")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("edge_index must have shape (2, E)")
        if edge_vec.dim() != 2 or edge_vec.shape[1] != 3 or edge_vec.shape[0] != edge_index.shape[1]:
            raise ValueError("edge_vec must have shape (E, 3) with E = edge_index.shape[1]")
        if edge_vec.dtype != self.reference_energy.dtype:
            raise ValueError(f"edge_vec must have the model's dtype ({self.dtype_name})")
        if species.numel() > 0 and (int(species.min()) < 0 or int(species.max()) >= self.num_elements):
            raise ValueError(f"species indices must lie in [0, {self.num_elements})")
        if edge_index.numel() > 0:
            if int(edge_index[0].max()) >= n_local or int(edge_index[1].max()) >= n_all \
                    or int(edge_index.min()) < 0:
                raise ValueError("edge_index: centres must be < n_local and neighbours < number of atoms")


class EnsembleLinear(nn.Module):
    """M independent linear layers applied as one batched matrix product: (M, n, in) -> (M, n, out)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.shape[0], 1, weight.shape[2], dtype=weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def edge_virials(edge_vec: torch.Tensor, dE_dr: torch.Tensor, center: torch.Tensor,
                 neighbor: torch.Tensor, n_atoms: int) -> Dict[str, torch.Tensor]:
    """Per-atom (half to i, half to j), centroid (all to i) and total virials, order xx yy zz xy xz
    yz yx zx zy, from each edge's -r_ij (x) dE/dr_ij."""
    edge_virial = -(edge_vec.unsqueeze(-1) * dE_dr.unsqueeze(-2)).reshape(-1, 9)
    edge_virial = edge_virial[:, [0, 4, 8, 1, 2, 5, 3, 6, 7]]
    centroid = torch.zeros(n_atoms, 9, dtype=edge_vec.dtype, device=edge_vec.device)
    centroid = centroid.index_add(0, center, edge_virial)
    virial = 0.5 * centroid.index_add(0, neighbor, edge_virial)
    return {"virial": virial, "centroid_virial": centroid, "total_virial": edge_virial.sum(0)}


def edge_forces(dE_dr: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                n_atoms: int) -> torch.Tensor:
    """Atom forces from edge gradients dE/dr_ij (..., E, 3), r_ij = r_j - r_i: F_i += g, F_j -= g."""
    if dE_dr.dim() == 2:
        forces = torch.zeros(n_atoms, 3, dtype=dE_dr.dtype, device=dE_dr.device)
        return forces.index_add(0, center, dE_dr).index_add(0, neighbor, -dE_dr)
    # (M, E, 3): scatter whole rows (E, M*3) along the leading axis, much faster than along axis 1
    M, E = dE_dr.shape[0], dE_dr.shape[1]
    rows = dE_dr.permute(1, 0, 2).reshape(E, M * 3)
    forces = torch.zeros(n_atoms, M * 3, dtype=dE_dr.dtype, device=dE_dr.device)
    forces = forces.index_add(0, center, rows).index_add(0, neighbor, -rows)
    return forces.view(n_atoms, M, 3).permute(1, 0, 2)
