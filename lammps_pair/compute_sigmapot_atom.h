/* compute ID group sigmapot/atom
   per-atom array (3 columns): sigma_E (eV), sigma_F (eV/A), force interval (eV/A)
   global vector (4): max sigma_F, mean sigma_F, max sigma_E (over the group), sigma of the total energy
   Values come from pair_style sigmapot of the same step; invoking it on a step without fresh
   uncertainty is an error. */
#ifndef LMP_COMPUTE_SIGMAPOT_ATOM_H
#define LMP_COMPUTE_SIGMAPOT_ATOM_H

#include "compute.h"

namespace LAMMPS_NS {

class ComputeSigmapotAtom : public Compute {
 public:
  ComputeSigmapotAtom(class LAMMPS *, int, char **);
  ~ComputeSigmapotAtom() override;
  void init() override;
  void compute_peratom() override;
  void compute_vector() override;
  double memory_usage() override;

 private:
  int nmax;
  double **unc;
  double vec[4];
  class PairSigmapot *pair;
  void check_fresh(const char *);
};

}    // namespace LAMMPS_NS

#endif
