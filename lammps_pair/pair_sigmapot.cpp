/* pair_style sigmapot: see pair_sigmapot.h and docs/model_interface.md.
   The C++ side only moves data between LAMMPS and the TorchScript model: all physics (energies, forces,
   virials, ensemble spread, calibration) is inside the model file. */

#include "pair_sigmapot.h"
#include "sigmapot_ops.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#ifdef __GLIBC__
#include <malloc.h>
#endif

using namespace LAMMPS_NS;

namespace LAMMPS_NS {
struct SigmapotModel {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
};
}    // namespace LAMMPS_NS

// model file formats read (sigmapot.model.FORMAT_VERSION): 2: forward() takes with_virial; 3: may call
// the compiled operators of libsigmapot_ops.so, which this plugin links; 4: may call atom_energies;
// 5: may call edge_forces
static constexpr int SIGMAPOT_FORMAT_VERSION = 5;
static constexpr int SIGMAPOT_MIN_FORMAT_VERSION = 2;
// 1024 atoms keep a chunk's float32 work arrays in the shared L3 cache: measured faster than 8192 on one
// rank and scaling 1 -> 2 ranks at 0.99 instead of 0.75 (docs/experiments.md)
static constexpr int DEFAULT_CHUNK = 1024;

// text of a torch exception without the C++ backtrace and without leading blank lines (some torch
// messages start with a newline, e.g. "\nUnknown type name 'posix.system'", and the callers keep only
// the first line)
static std::string torch_message(const std::exception &e)
{
  std::string msg;
  if (auto *ce = dynamic_cast<const c10::Error *>(&e))
    msg = ce->what_without_backtrace();
  else
    msg = e.what();
  const auto first = msg.find_first_not_of(" \t\r\n");
  return first == std::string::npos ? std::string() : msg.substr(first);
}

/* ----------------------------------------------------------------------
   keep freed heap memory in the process: every model call allocates and frees megabytes of work
   tensors, and glibc's default thresholds hand them back to the kernel and page-fault them in again
   (about 9,000 page faults per MD step of 2,000 atoms, 100-230 with these settings; steps 2-28 % faster
   in six alternating runs, docs/experiments.md).  Peak memory is unchanged: the kept memory is reused
   by the next call.  The ASE calculator applies the same values (python/sigmapot/heap.py).
------------------------------------------------------------------------- */

static void keep_heap_memory()
{
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);    // glibc's maximum: work tensors come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);     // do not return freed heap tops below 1 GiB
  mallopt(M_TOP_PAD, 64 << 20);           // grow the heap in 64 MiB steps
#endif
}

/* ---------------------------------------------------------------------- */

PairSigmapot::PairSigmapot(LAMMPS *lmp) : Pair(lmp)
{
  keep_heap_memory();
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_AVAIL;
  unit_convert_flag = 0;
  comm_reverse = 0;

  chunk_size = DEFAULT_CHUNK;
  nthreads = 1;
  unc_every = 0;
  device_name = "cpu";

  cutoff = cutoff_sq = 0.0;
  nmembers = 0;
  map = nullptr;

  maxatom = 0;
  maxunc = 0;
  slot = nullptr;
  mforce = nullptr;
  menergy = nullptr;
  sig_e = sig_f = f_int = nullptr;

  unc_request = 0;
  unc_step = -1;
  unc_nlocal = 0;
  etot_std = 0.0;
}

/* ---------------------------------------------------------------------- */

PairSigmapot::~PairSigmapot()
{
  if (copymode) return;
  memory->destroy(slot);
  memory->destroy(mforce);
  memory->destroy(menergy);
  memory->destroy(sig_e);
  memory->destroy(sig_f);
  memory->destroy(f_int);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    delete[] map;
  }
}

/* ---------------------------------------------------------------------- */

void PairSigmapot::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 1; i < n; i++)
    for (int j = i; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  map = new int[n];
  for (int i = 0; i < n; i++) map[i] = -1;
}

/* ----------------------------------------------------------------------
   pair_style sigmapot [chunk N] [threads N] [uncertainty_every N] [device cpu|cuda|cuda:K]
------------------------------------------------------------------------- */

void PairSigmapot::settings(int narg, char **arg)
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "Pair style sigmapot requires 'units metal' (the model works in eV and Angstrom), "
               "but the current units are '{}': put 'units metal' before the box is created",
               update->unit_style);

  chunk_size = DEFAULT_CHUNK;
  nthreads = 1;
  unc_every = 0;
  device_name = "cpu";

  int iarg = 0;
  while (iarg < narg) {
    const std::string kw = arg[iarg];
    if (iarg + 2 > narg)
      error->all(FLERR, "pair_style sigmapot: keyword '{}' needs a value", kw);
    if (kw == "chunk") {
      chunk_size = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (chunk_size < 1) error->all(FLERR, "pair_style sigmapot: 'chunk' must be >= 1 (atoms per model call)");
    } else if (kw == "threads") {
      nthreads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nthreads < 1) error->all(FLERR, "pair_style sigmapot: 'threads' must be >= 1");
    } else if (kw == "uncertainty_every") {
      unc_every = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
      if (unc_every < 0)
        error->all(FLERR, "pair_style sigmapot: 'uncertainty_every' must be >= 0 (0 = only when requested)");
    } else if (kw == "device") {
      device_name = arg[iarg + 1];
      const bool is_cuda = device_name == "cuda" ||
          (device_name.rfind("cuda:", 0) == 0 && device_name.size() > 5 &&
           device_name.find_first_not_of("0123456789", 5) == std::string::npos);
      if (device_name != "cpu" && !is_cuda)
        error->all(FLERR, "pair_style sigmapot: unknown device '{}' (use 'cpu', 'cuda' or 'cuda:K')",
                   device_name);
      if (device_name != "cpu" && !torch::cuda::is_available())
        error->all(FLERR,
                   "pair_style sigmapot: 'device {}' requested, but torch finds no usable CUDA device on "
                   "this machine (CPU-only torch build or no GPU); use 'device cpu'",
                   device_name);
    } else {
      error->all(FLERR,
                 "pair_style sigmapot: unknown keyword '{}' (known: chunk, threads, uncertainty_every, device)",
                 kw);
    }
    iarg += 2;
  }
  // a new device invalidates a loaded model: pair_coeff must be repeated
  if (model && model->device != torch::Device(device_name)) {
    model.reset();
    if (allocated)
      for (int i = 1; i <= atom->ntypes; i++)
        for (int j = i; j <= atom->ntypes; j++) setflag[i][j] = 0;
  }
}

/* ----------------------------------------------------------------------
   load the model on every rank; all ranks agree on success or fail together
------------------------------------------------------------------------- */

void PairSigmapot::load_model(const std::string &path)
{
  std::string err;
  auto m = std::make_unique<SigmapotModel>();
  std::vector<std::string> els;
  double rc = 0.0;
  int nm = 0;

  if (!platform::file_is_readable(path)) {
    err = fmt::format("pair_coeff sigmapot: cannot read model file '{}' (missing or no permission); "
                      "give the path of a model exported with sigmapot (e.g. 'make demo' writes "
                      "examples/models/si_quickstart.pt)",
                      path);
  } else {
    try {
      m->device = torch::Device(device_name);
      try {
        m->module = torch::jit::load(path, m->device);
      } catch (const std::exception &e) {
        std::string msg = torch_message(e);
        auto pos = msg.find(". ");
        if (pos != std::string::npos) msg = msg.substr(0, pos);
        throw std::runtime_error(fmt::format(
            "not a readable TorchScript archive (truncated, corrupted or not exported by sigmapot; "
            "re-export it with 'sigmapot export'): {}",
            msg));
      }
      m->module.eval();
      auto &mod = m->module;
      if (!mod.hasattr("model_kind") || !mod.attr("model_kind").isString() ||
          mod.attr("model_kind").toStringRef() != "sigmapot")
        throw std::runtime_error(fmt::format(
            "'{}' is a TorchScript file but not a sigmapot model (no model_kind == 'sigmapot'); "
            "export models with sigmapot.export_model",
            path));
      if (!mod.hasattr("format_version"))
        throw std::runtime_error("the model has no 'format_version' attribute");
      int64_t fv = mod.attr("format_version").toInt();
      if (fv > SIGMAPOT_FORMAT_VERSION)
        throw std::runtime_error(fmt::format(
            "model format_version {} is not supported by this plugin (supports {}); "
            "update and rebuild the sigmapot plugin",
            fv, SIGMAPOT_FORMAT_VERSION));
      if (fv < SIGMAPOT_MIN_FORMAT_VERSION)
        throw std::runtime_error(fmt::format(
            "model format_version {} is older than this plugin reads ({}..{}); export the model "
            "again from its run with 'sigmapot export RUN_DIR -o model.pt'",
            fv, SIGMAPOT_MIN_FORMAT_VERSION, SIGMAPOT_FORMAT_VERSION));
      for (const auto &e : mod.attr("elements").toListRef()) els.push_back(e.toStringRef());
      rc = mod.attr("cutoff").toDouble();
      nm = (int) mod.attr("ensemble_size").toInt();
      std::string dt = mod.attr("dtype_name").toStringRef();
      if (dt == "float64")
        m->dtype = torch::kFloat64;
      else if (dt == "float32")
        m->dtype = torch::kFloat32;
      else
        throw std::runtime_error(fmt::format(
            "model dtype '{}' cannot be run by this plugin (supported: float64, float32)", dt));
      if (!mod.find_method("forward") || !mod.find_method("uncertainty"))
        throw std::runtime_error("the model lacks the forward() or uncertainty() method");
      if (els.empty() || !(rc > 0.0) || nm < 1)
        throw std::runtime_error(fmt::format(
            "invalid model attributes: {} elements, cutoff {}, ensemble_size {}", els.size(), rc, nm));
    } catch (const std::exception &e) {
      err = fmt::format("pair_coeff sigmapot: cannot use model file '{}': {}", path, torch_message(e));
      // keep the first lines only (torch adds long serialization details)
      auto pos = err.find('\n');
      if (pos != std::string::npos) err = err.substr(0, pos);
    }
  }

  int bad = err.empty() ? 0 : 1, anybad = 0;
  MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, world);
  if (anybad) {
    if (bad) error->all(FLERR, err);
    error->all(FLERR, "pair_coeff sigmapot: loading the model failed on another MPI rank");
  }

  model = std::move(m);
  model_path = path;
  elements = els;
  cutoff = rc;
  cutoff_sq = rc * rc;
  nmembers = nm;
  mtot.assign(nmembers, 0.0);
  comm_reverse = 3 * nmembers;    // member forces of ghost atoms
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt El1 El2 ... (one element or NULL per atom type)
------------------------------------------------------------------------- */

void PairSigmapot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;

  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair style sigmapot must be 'pair_coeff * * model.pt El1 ... El{}' "
                      "(one element symbol or NULL per atom type)",
               ntypes);
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff * * {}: {} element names given, but there are {} atom types; give one model "
               "element (or NULL for types handled by another pair style) for every type",
               arg[2], narg - 3, ntypes);

  load_model(arg[2]);

  int count = 0;
  for (int i = 1; i <= ntypes; i++) {
    const std::string el = arg[2 + i];
    if (el == "NULL") {
      // NULL is only meaningful when another sub-style of pair_style hybrid/overlay handles the type
      if (force->pair == this)
        error->all(FLERR,
                   "pair_coeff sigmapot: atom type {} has no model element (NULL); NULL is only allowed "
                   "under pair_style hybrid/overlay, give an element of the model ({}) instead",
                   i, utils::join_words(elements, " "));
      map[i] = -1;
      continue;
    }
    auto it = std::find(elements.begin(), elements.end(), el);
    if (it == elements.end())
      error->all(FLERR, "pair_coeff sigmapot: element '{}' for atom type {} is not in model '{}' (model elements: {})",
                 el, i, model_path, utils::join_words(elements, " "));
    map[i] = (int) (it - elements.begin());
    count++;
  }
  if (count == 0) error->all(FLERR, "pair_coeff sigmapot: all atom types are NULL, nothing to compute");

  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = (map[i] >= 0 && map[j] >= 0) ? 1 : 0;

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "sigmapot: model {} | elements {} | cutoff {} A | {} ensemble members | {} on {} | "
                   "chunk {} atoms | {} torch thread(s) per rank | uncertainty every {} steps{} | "
                   "operators v{}\n",
                   model_path, utils::join_words(elements, " "), cutoff, nmembers,
                   model->dtype == torch::kFloat64 ? "float64" : "float32", device_name, chunk_size,
                   nthreads, unc_every, unc_every ? "" : " (0: only when requested)",
                   sigmapot_ops_version());
}

/* ---------------------------------------------------------------------- */

void PairSigmapot::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "Pair style sigmapot requires 'units metal' (current units: '{}')", update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR,
               "Pair style sigmapot requires newton pair on (ghost-atom forces of the model are "
               "reverse-communicated); remove 'newton off' or use 'newton on'");
  if (!model)
    error->all(FLERR, "Pair style sigmapot: no model loaded; use 'pair_coeff * * model.pt El1 El2 ...'");

  // stand-alone use: every type needs an element (NULL is only for pair_style hybrid/overlay)
  if (force->pair == this) {
    for (int i = 1; i <= atom->ntypes; i++)
      if (map[i] < 0)
        error->all(FLERR,
                   "Pair style sigmapot: atom type {} has no model element (NULL in pair_coeff); NULL is "
                   "only allowed under pair_style hybrid/overlay",
                   i);
  }

  // reverse comm of the M member forces: Comm sizes its buffers from force->pair->comm_reverse,
  // which under pair_style hybrid* is the parent's (fixed before the model was read)
  comm_reverse = 3 * nmembers;
  if (force->pair && force->pair != this && force->pair->comm_reverse < comm_reverse)
    force->pair->comm_reverse = comm_reverse;

  at::set_num_threads(nthreads);
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

/* ---------------------------------------------------------------------- */

double PairSigmapot::init_one(int i, int j)
{
  if (setflag[i][j] == 0)
    error->all(FLERR, "Pair style sigmapot: no element mapping for atom types {} {}", i, j);
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairSigmapot::grow_atom_arrays(bool with_members)
{
  const int nmax = atom->nmax;
  if (nmax > maxatom) {
    memory->grow(slot, nmax, "pair:sigmapot:slot");
    for (int i = maxatom; i < nmax; i++) slot[i] = -1;
    memory->grow(sig_e, nmax, "pair:sigmapot:sigma_e");
    memory->grow(sig_f, nmax, "pair:sigmapot:sigma_f");
    memory->grow(f_int, nmax, "pair:sigmapot:force_interval");
    maxatom = nmax;
  }
  if (with_members && maxunc < nmax) {
    memory->destroy(mforce);
    memory->destroy(menergy);
    memory->create(mforce, (bigint) nmax * nmembers * 3, "pair:sigmapot:member_forces");
    memory->create(menergy, (bigint) nmax * nmembers, "pair:sigmapot:member_energy");
    maxunc = nmax;
  }
}

/* ----------------------------------------------------------------------
   a non-finite energy or force must stop the run at once, naming the atoms (a NaN that reaches the
   integrator is lost work: it spreads to every atom within a few steps)
------------------------------------------------------------------------- */

void PairSigmapot::check_finite(const double *en, const double *fo, const std::vector<int> &atoms,
                                int nc, int n)
{
  std::string bad;
  int nbad = 0;
  for (int k = 0; k < n && nbad < 10; k++) {
    const bool ok = std::isfinite(fo[3 * k]) && std::isfinite(fo[3 * k + 1]) &&
        std::isfinite(fo[3 * k + 2]) && (k >= nc || std::isfinite(en[k]));
    if (!ok) {
      bad += fmt::format(" {}", atom->tag[atoms[k]]);
      nbad++;
    }
  }
  if (nbad > 0)
    error->one(FLERR,
               "pair sigmapot: non-finite energy or force on step {} for atom ID(s){}; check these "
               "atoms' positions (overlapping atoms, lost atoms, a too large timestep)",
               update->ntimestep, bad);
}

/* ----------------------------------------------------------------------
   is the uncertainty needed on this step?  uncertainty_every, fix pair trigger, or a compute
   sigmapot/atom that thermo/dump/fix halt/variables will invoke on this step (matchstep)
------------------------------------------------------------------------- */

bool PairSigmapot::uncertainty_needed()
{
  if (unc_request) return true;
  const bigint step = update->ntimestep;
  if (unc_every > 0 && step % unc_every == 0) return true;
  for (auto *c : modify->get_compute_by_style("^sigmapot/atom$"))
    if (c->matchstep(step)) return true;
  return false;
}

/* ---------------------------------------------------------------------- */

void PairSigmapot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  const bool with_members = uncertainty_needed();
  // most MD steps need no virial (LAMMPS asks for it on thermo/pressure steps): the model skips it
  const bool with_virial = vflag_global || vflag_atom || cvflag_atom;
  grow_atom_arrays(with_members);

  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int M = nmembers;

  if (with_members) {
    std::fill(mforce, mforce + (bigint) nall * M * 3, 0.0);
    std::fill(menergy, menergy + (bigint) nlocal * M, 0.0);
  }
  unc_step = -1;    // results of an earlier step are stale from here on

  const int inum = list->inum;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  std::vector<int> atoms;
  std::vector<int64_t> species, e_i, e_j;
  std::vector<double> evec;

  for (int start = 0; start < inum; start += chunk_size) {
    const int end = std::min(inum, start + chunk_size);
    atoms.clear();
    e_i.clear();
    e_j.clear();
    evec.clear();

    // chunk centres first, then their neighbours within the model cutoff
    for (int ii = start; ii < end; ii++) {
      const int i = ilist[ii];
      if (map[type[i]] < 0) continue;
      slot[i] = (int) atoms.size();
      atoms.push_back(i);
    }
    const int nc = (int) atoms.size();
    if (nc == 0) continue;

    for (int k = 0; k < nc; k++) {
      const int i = atoms[k];
      const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
      const int *jlist = firstneigh[i];
      const int jnum = numneigh[i];
      for (int jj = 0; jj < jnum; jj++) {
        const int j = jlist[jj] & NEIGHMASK;
        if (map[type[j]] < 0) continue;
        const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
        if (dx * dx + dy * dy + dz * dz >= cutoff_sq) continue;
        if (slot[j] < 0) {
          slot[j] = (int) atoms.size();
          atoms.push_back(j);
        }
        e_i.push_back(k);
        e_j.push_back(slot[j]);
        evec.push_back(dx);
        evec.push_back(dy);
        evec.push_back(dz);
      }
    }
    const int n = (int) atoms.size();
    const int64_t ne = (int64_t) e_i.size();
    species.resize(n);
    for (int k = 0; k < n; k++) species[k] = map[type[atoms[k]]];
    for (int k = 0; k < n; k++) slot[atoms[k]] = -1;

    torch::Tensor t_energy, t_forces, t_virial, t_cvirial, t_tvirial, t_menergy, t_mforces;
    std::string err;
    try {
      auto cpu_long = torch::TensorOptions().dtype(torch::kInt64);
      auto cpu_double = torch::TensorOptions().dtype(torch::kFloat64);
      torch::Tensor t_species = torch::from_blob(species.data(), {n}, cpu_long).to(model->device);
      torch::Tensor t_index = torch::empty({2, ne}, cpu_long);
      if (ne > 0) {
        std::memcpy(t_index.data_ptr<int64_t>(), e_i.data(), ne * sizeof(int64_t));
        std::memcpy(t_index.data_ptr<int64_t>() + ne, e_j.data(), ne * sizeof(int64_t));
      }
      t_index = t_index.to(model->device);
      torch::Tensor t_vec = torch::from_blob(evec.data(), {ne, 3}, cpu_double).to(model->device, model->dtype);

      std::vector<torch::jit::IValue> inputs{t_species, t_index, t_vec, (int64_t) nc, with_members,
                                             with_virial};
      auto out = model->module.forward(inputs).toGenericDict();
      auto get = [&](const char *key, int64_t numel) {
        torch::Tensor t = out.at(key).toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
        if (t.numel() != numel)
          throw std::runtime_error(fmt::format("model output '{}' has {} values, expected {}", key, t.numel(), numel));
        return t;
      };
      t_energy = get("energy", nc);
      t_forces = get("forces", (int64_t) n * 3);
      if (vflag_atom) t_virial = get("virial", (int64_t) n * 9);
      if (cvflag_atom) t_cvirial = get("centroid_virial", (int64_t) n * 9);
      if (vflag_global) t_tvirial = get("total_virial", 9);
      if (with_members) {
        t_menergy = get("member_energy", (int64_t) M * nc);
        t_mforces = get("member_forces", (int64_t) M * n * 3);
      }
    } catch (const std::exception &e) {
      err = torch_message(e);
      auto pos = err.find('\n');
      if (pos != std::string::npos) err = err.substr(0, pos);
    }
    if (!err.empty())
      error->one(FLERR, "pair sigmapot: model evaluation failed on step {} ({} atoms, {} edges): {}",
                 update->ntimestep, n, ne, err);

    const double *en = t_energy.data_ptr<double>();
    const double *fo = t_forces.data_ptr<double>();
    check_finite(en, fo, atoms, nc, n);
    for (int k = 0; k < nc; k++) {
      if (eflag_global) eng_vdwl += en[k];
      if (eflag_atom) eatom[atoms[k]] += en[k];
    }
    for (int k = 0; k < n; k++) {
      double *fi = f[atoms[k]];
      fi[0] += fo[3 * k];
      fi[1] += fo[3 * k + 1];
      fi[2] += fo[3 * k + 2];
    }
    if (vflag_atom) {
      const double *v = t_virial.data_ptr<double>();
      for (int k = 0; k < n; k++)
        for (int c = 0; c < 6; c++) vatom[atoms[k]][c] += v[9 * k + c];
    }
    if (cvflag_atom) {
      const double *v = t_cvirial.data_ptr<double>();
      for (int k = 0; k < n; k++)
        for (int c = 0; c < 9; c++) cvatom[atoms[k]][c] += v[9 * k + c];
    }
    if (vflag_global) {
      const double *v = t_tvirial.data_ptr<double>();
      for (int c = 0; c < 6; c++) virial[c] += v[c];
    }
    if (with_members) {
      const double *me = t_menergy.data_ptr<double>();
      const double *mf = t_mforces.data_ptr<double>();
      for (int m = 0; m < M; m++)
        for (int k = 0; k < nc; k++) menergy[(bigint) atoms[k] * M + m] = me[(bigint) m * nc + k];
      for (int m = 0; m < M; m++)
        for (int k = 0; k < n; k++) {
          double *dst = mforce + ((bigint) atoms[k] * M + m) * 3;
          const double *src = mf + ((bigint) m * n + k) * 3;
          dst[0] += src[0];
          dst[1] += src[1];
          dst[2] += src[2];
        }
    }
  }

  if (with_members) finish_uncertainty();
}

/* ----------------------------------------------------------------------
   complete the member forces of owned atoms (reverse comm), sum the member total energies
   over all ranks, then let the model calibrate the per-atom uncertainty, in chunks
------------------------------------------------------------------------- */

void PairSigmapot::finish_uncertainty()
{
  const int M = nmembers;
  const int nlocal = atom->nlocal;
  int *type = atom->type;

  comm->reverse_comm(this);

  std::vector<double> loc(M, 0.0);
  std::vector<int> owned;
  owned.reserve(nlocal);
  for (int i = 0; i < nlocal; i++) {
    sig_e[i] = sig_f[i] = f_int[i] = 0.0;
    if (map[type[i]] < 0) continue;
    owned.push_back(i);
    for (int m = 0; m < M; m++) loc[m] += menergy[(bigint) i * M + m];
  }
  MPI_Allreduce(loc.data(), mtot.data(), M, MPI_DOUBLE, MPI_SUM, world);

  double my_tstd = -1.0;
  std::string err;
  const int nown = (int) owned.size();
  std::vector<double> me, mf;
  for (int start = 0; start < nown && err.empty(); start += chunk_size) {
    const int n = std::min(nown, start + chunk_size) - start;
    me.resize((size_t) M * n);
    mf.resize((size_t) M * n * 3);
    for (int m = 0; m < M; m++)
      for (int k = 0; k < n; k++) {
        const int i = owned[start + k];
        me[(size_t) m * n + k] = menergy[(bigint) i * M + m];
        for (int d = 0; d < 3; d++) mf[((size_t) m * n + k) * 3 + d] = mforce[((bigint) i * M + m) * 3 + d];
      }
    try {
      auto cpu_double = torch::TensorOptions().dtype(torch::kFloat64);
      auto t_me = torch::from_blob(me.data(), {M, n}, cpu_double).to(model->device, model->dtype);
      auto t_mf = torch::from_blob(mf.data(), {M, n, 3}, cpu_double).to(model->device, model->dtype);
      auto t_mt = torch::from_blob(mtot.data(), {M}, cpu_double).to(model->device, model->dtype);
      auto out = model->module.get_method("uncertainty")({t_me, t_mf, t_mt}).toGenericDict();
      auto get = [&](const char *key, int64_t numel) {
        torch::Tensor t = out.at(key).toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
        if (t.numel() != numel)
          throw std::runtime_error(fmt::format("uncertainty output '{}' has {} values, expected {}", key, t.numel(), numel));
        return t;
      };
      auto es = get("energy_std", n), fs = get("force_std", n), fi = get("force_interval", n);
      my_tstd = get("total_energy_std", 1).item<double>();
      const double *pes = es.data_ptr<double>(), *pfs = fs.data_ptr<double>(), *pfi = fi.data_ptr<double>();
      for (int k = 0; k < n; k++) {
        const int i = owned[start + k];
        sig_e[i] = pes[k];
        sig_f[i] = pfs[k];
        f_int[i] = pfi[k];
      }
    } catch (const std::exception &e) {
      err = torch_message(e);
      auto pos = err.find('\n');
      if (pos != std::string::npos) err = err.substr(0, pos);
    }
  }
  if (!err.empty())
    error->one(FLERR, "pair sigmapot: uncertainty() of the model failed on step {}: {}", update->ntimestep, err);

  // sigma of the total energy: same inputs on every rank that owns atoms
  MPI_Allreduce(&my_tstd, &etot_std, 1, MPI_DOUBLE, MPI_MAX, world);
  if (etot_std < 0.0) etot_std = 0.0;

  unc_step = update->ntimestep;
  unc_nlocal = nlocal;
}

/* ---------------------------------------------------------------------- */

int PairSigmapot::pack_reverse_comm(int n, int first, double *buf)
{
  const int stride = 3 * nmembers;
  int m = 0;
  for (int i = first; i < first + n; i++) {
    const double *src = mforce + (bigint) i * stride;
    for (int c = 0; c < stride; c++) buf[m++] = src[c];
  }
  return m;
}

/* ---------------------------------------------------------------------- */

void PairSigmapot::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int stride = 3 * nmembers;
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *dst = mforce + (bigint) list[i] * stride;
    for (int c = 0; c < stride; c++) dst[c] += buf[m++];
  }
}

/* ----------------------------------------------------------------------
   fix pair triggers: <field>_flag (int, scalar)
------------------------------------------------------------------------- */

void *PairSigmapot::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "sigma_e_flag") == 0 || strcmp(name, "sigma_f_flag") == 0 ||
      strcmp(name, "force_interval_flag") == 0)
    return (void *) &unc_request;
  if (strcmp(name, "cutoff") == 0) return (void *) &cutoff;
  return nullptr;
}

/* ----------------------------------------------------------------------
   per-atom uncertainty vectors for fix pair
------------------------------------------------------------------------- */

void *PairSigmapot::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (strcmp(name, "sigma_e") == 0) return (void *) sig_e;
  if (strcmp(name, "sigma_f") == 0) return (void *) sig_f;
  if (strcmp(name, "force_interval") == 0) return (void *) f_int;
  return nullptr;
}

/* ---------------------------------------------------------------------- */

double PairSigmapot::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += (double) maxatom * (sizeof(int) + 3 * sizeof(double));
  bytes += (double) maxunc * nmembers * 4 * sizeof(double);
  return bytes;
}
