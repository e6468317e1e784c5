#include "sigmapot_ops.h"

extern "C" int sigmapot_ops_version() { return 3; }
