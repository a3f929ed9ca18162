// HDF5 for Swift. Debian: libhdf5-dev (pkg-config: hdf5).
// Swift cannot import HDF5's type and property-list macros (they expand to function calls that open the
// library), so each one used gets a static inline accessor here.
#ifndef DEHVF_CHDF5_SHIM_H
#define DEHVF_CHDF5_SHIM_H
#include <hdf5.h>

static inline hid_t dehvf_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t dehvf_H5S_ALL(void) { return H5S_ALL; }
static inline hid_t dehvf_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t dehvf_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t dehvf_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t dehvf_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t dehvf_H5T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t dehvf_H5T_NATIVE_UINT32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t dehvf_H5T_C_S1(void) { return H5T_C_S1; }
static inline hid_t dehvf_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t dehvf_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t dehvf_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t dehvf_H5P_DATASET_XFER(void) { return H5P_DATASET_XFER; }
static inline hid_t dehvf_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline unsigned dehvf_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned dehvf_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline unsigned dehvf_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned dehvf_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }
#endif
