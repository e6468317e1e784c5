#include "compute_sigmapot_atom.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_sigmapot.h"
#include "update.h"

#include <algorithm>
#include <cstring>

using namespace LAMMPS_NS;

/* ---------------------------------------------------------------------- */

ComputeSigmapotAtom::ComputeSigmapotAtom(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), nmax(0), unc(nullptr), pair(nullptr)
{
  if (narg != 3) error->all(FLERR, "Illegal compute sigmapot/atom command: use 'compute ID group sigmapot/atom'");

  peratom_flag = 1;
  size_peratom_cols = 3;
  vector_flag = 1;
  size_vector = 4;
  extvector = 0;
  // store invocation steps: pair sigmapot checks matchstep() to know when uncertainty is needed
  timeflag = 1;
  for (double &v : vec) v = 0.0;
  vector = vec;
}

/* ---------------------------------------------------------------------- */

ComputeSigmapotAtom::~ComputeSigmapotAtom()
{
  memory->destroy(unc);
}

/* ---------------------------------------------------------------------- */

void ComputeSigmapotAtom::init()
{
  pair = dynamic_cast<PairSigmapot *>(force->pair_match("^sigmapot$", 0, 0));
  if (!pair)
    error->all(FLERR,
               "Compute sigmapot/atom requires pair_style sigmapot (alone or as the only sigmapot "
               "sub-style of pair_style hybrid/overlay)");
}

/* ---------------------------------------------------------------------- */

void ComputeSigmapotAtom::check_fresh(const char *what)
{
  if (!pair) init();
  if (pair->uncertainty_step() != update->ntimestep || pair->uncertainty_nlocal() != atom->nlocal)
    error->all(FLERR,
               "Compute sigmapot/atom ({}) was invoked on step {}, but pair sigmapot has no uncertainty "
               "for this step (last: {}). Request it with 'pair_style sigmapot uncertainty_every N' "
               "(a divisor of the output interval) or use this compute only on steps where "
               "thermo/dump/fix output asks for it",
               what, update->ntimestep,
               pair->uncertainty_step() < 0 ? std::string("none") : std::to_string(pair->uncertainty_step()));
}

/* ---------------------------------------------------------------------- */

void ComputeSigmapotAtom::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  check_fresh("per-atom");

  if (atom->nmax > nmax) {
    memory->destroy(unc);
    nmax = atom->nmax;
    memory->create(unc, nmax, 3, "sigmapot/atom:array");
    array_atom = unc;
  }
  const int nlocal = atom->nlocal;
  const int *mask = atom->mask;
  const double *se = pair->sigma_e(), *sf = pair->sigma_f(), *fi = pair->force_interval();
  for (int i = 0; i < nlocal; i++) {
    if (mask[i] & groupbit) {
      unc[i][0] = se[i];
      unc[i][1] = sf[i];
      unc[i][2] = fi[i];
    } else {
      unc[i][0] = unc[i][1] = unc[i][2] = 0.0;
    }
  }
}

/* ---------------------------------------------------------------------- */

void ComputeSigmapotAtom::compute_vector()
{
  invoked_vector = update->ntimestep;
  check_fresh("global vector");

  const int nlocal = atom->nlocal;
  const int *mask = atom->mask;
  const double *se = pair->sigma_e(), *sf = pair->sigma_f();
  double maxes[2] = {0.0, 0.0}, sums[2] = {0.0, 0.0};
  for (int i = 0; i < nlocal; i++) {
    if (!(mask[i] & groupbit)) continue;
    maxes[0] = std::max(maxes[0], sf[i]);
    maxes[1] = std::max(maxes[1], se[i]);
    sums[0] += sf[i];
    sums[1] += 1.0;
  }
  double gmax[2], gsum[2];
  MPI_Allreduce(maxes, gmax, 2, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(sums, gsum, 2, MPI_DOUBLE, MPI_SUM, world);
  vec[0] = gmax[0];
  vec[1] = gsum[1] > 0.0 ? gsum[0] / gsum[1] : 0.0;
  vec[2] = gmax[1];
  vec[3] = pair->total_energy_std();
}

/* ---------------------------------------------------------------------- */

double ComputeSigmapotAtom::memory_usage()
{
  return (double) nmax * 3 * sizeof(double);
}
