// glibc's malloc tunables (mallopt), which Swift's Glibc module does not export. Part of libc: no link.
#ifndef DEHVF_CMALLOC_SHIM_H
#define DEHVF_CMALLOC_SHIM_H
#include <malloc.h>
#endif
