// OpenBLAS's CBLAS for Swift. Debian: libopenblas-dev (pkg-config: openblas).
// blasint is 32-bit in Debian's build: convert Int explicitly at call sites.
#ifndef DEHVF_COPENBLAS_SHIM_H
#define DEHVF_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
