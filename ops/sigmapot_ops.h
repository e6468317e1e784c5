// The compiled operators of sigmapot (libsigmapot_ops.so): registered with TorchScript as
// torch.ops.sigmapot.* when the library is loaded (Python: sigmapot.ops.load_ops; LAMMPS: linked by the
// plugin).  Exported model files call them, so a process must load this library before torch::jit::load.
#pragma once

extern "C" {
// Version of the operator set; the plugin calls it, which also keeps the library linked (not dropped
// by --as-needed), so that its operators are registered whenever the plugin is loaded.
int sigmapot_ops_version();
}
