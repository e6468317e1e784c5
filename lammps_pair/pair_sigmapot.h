/* pair_style sigmapot: ML potential from an exported sigmapot TorchScript model, with ensemble
   uncertainty (sigma_E, sigma_F, force interval) per atom. Strictly local model, FULL neighbour list,
   newton_pair on (ghost forces are reverse-communicated). */
#ifndef LMP_PAIR_SIGMAPOT_H
#define LMP_PAIR_SIGMAPOT_H

#include "pair.h"

#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

struct SigmapotModel;    // torch::jit::Module and its device/dtype, kept out of this header

class PairSigmapot : public Pair {
 public:
  PairSigmapot(class LAMMPS *);
  ~PairSigmapot() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  double memory_usage() override;

  // uncertainty results of the last uncertainty step, read by compute sigmapot/atom
  bigint uncertainty_step() const { return unc_step; }
  int uncertainty_nlocal() const { return unc_nlocal; }
  const double *sigma_e() const { return sig_e; }
  const double *sigma_f() const { return sig_f; }
  const double *force_interval() const { return f_int; }
  double total_energy_std() const { return etot_std; }
  const std::vector<double> &member_total_energy() const { return mtot; }

 protected:
  // settings
  int chunk_size;            // local atoms per model call
  int nthreads;              // torch intra-op threads per rank
  bigint unc_every;          // 0: uncertainty only on request; N: also every N steps
  std::string device_name;   // "cpu" or "cuda[:k]"

  // model
  std::unique_ptr<SigmapotModel> model;
  std::string model_path;
  std::vector<std::string> elements;
  double cutoff, cutoff_sq;
  int nmembers;
  int *map;    // atom type -> model element index, -1 = NULL (not handled here)

  // per-atom work and result arrays (size nmax)
  int maxatom;
  int *slot;           // atom index -> index in the current chunk, -1 if not in it
  double *mforce;      // nmax * M * 3 member forces (partial on ghosts until reverse comm)
  double *menergy;     // nmax * M member per-atom energies (local atoms)
  double *sig_e, *sig_f, *f_int;
  int maxunc;

  // uncertainty bookkeeping
  int unc_request;    // set by fix pair (extract "<name>_flag"), cleared after use by fix pair
  bigint unc_step;    // step of the last uncertainty evaluation, -1 if none (or invalidated)
  int unc_nlocal;
  double etot_std;
  std::vector<double> mtot;

  void allocate();
  void grow_atom_arrays(bool with_members);
  void check_finite(const double *en, const double *fo, const std::vector<int> &atoms, int nc, int n);
  bool uncertainty_needed();
  void finish_uncertainty();
  void load_model(const std::string &);
};

}    // namespace LAMMPS_NS

#endif
