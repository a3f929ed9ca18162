// HDF5 for Swift. Debian: libhdf5-dev (pkg-config: hdf5).
// Swift cannot import HDF5's type and property-list macros (they expand to function calls that open the
// library), so each one used gets a static inline accessor here.
#ifndef DEHVF_CHDF5_SHIM_H
#define DEHVF_CHDF5_SHIM_H
#include <hdf5.h>
#include <stdio.h>

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
static inline hid_t dehvf_H5P_GROUP_CREATE(void) { return H5P_GROUP_CREATE; }
static inline hid_t dehvf_H5P_DATASET_ACCESS(void) { return H5P_DATASET_ACCESS; }
static inline unsigned dehvf_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned dehvf_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline unsigned dehvf_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned dehvf_H5F_ACC_EXCL(void) { return H5F_ACC_EXCL; }
static inline hid_t dehvf_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline size_t dehvf_H5T_VARIABLE(void) { return H5T_VARIABLE; }
static inline unsigned dehvf_H5P_CRT_ORDER_TRACKED_INDEXED(void) {
    return H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED;
}

// The error stack as one line, innermost call last: "H5Dread(): ... [checksum failed]; ...".
// Walked in C because H5Ewalk2 wants a C callback with a context pointer.
typedef struct { char *buf; size_t cap; size_t len; } dehvf_h5_stack_text;

static inline herr_t dehvf_h5_walk_one(unsigned n, const H5E_error2_t *e, void *ctx) {
    (void)n;
    dehvf_h5_stack_text *t = (dehvf_h5_stack_text *)ctx;
    if (t->len + 1 >= t->cap) return 0;
    char minor[128] = "";
    if (H5Eget_msg(e->min_num, NULL, minor, sizeof minor) < 0) minor[0] = 0;
    int w = snprintf(t->buf + t->len, t->cap - t->len, "%s%s(): %s%s%s%s",
                     t->len ? "; " : "", e->func_name ? e->func_name : "?",
                     e->desc ? e->desc : "", minor[0] ? " [" : "", minor, minor[0] ? "]" : "");
    if (w > 0) t->len += (size_t)w < t->cap - t->len ? (size_t)w : t->cap - t->len - 1;
    return 0;
}

/// Writes the current thread's HDF5 error stack into `buf` (NUL-terminated) and clears it.
static inline void dehvf_h5_take_error_stack(char *buf, size_t cap) {
    dehvf_h5_stack_text t = { buf, cap, 0 };
    if (cap) buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, dehvf_h5_walk_one, &t);
    H5Eclear2(H5E_DEFAULT);
}

/// Stops HDF5 printing its error stack to stderr: errors are reported through Swift errors instead.
static inline void dehvf_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
#endif
