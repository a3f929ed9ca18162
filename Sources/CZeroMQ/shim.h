// ZeroMQ for Swift. Debian: libzmq3-dev (pkg-config: libzmq).
#ifndef DEHVF_CZEROMQ_SHIM_H
#define DEHVF_CZEROMQ_SHIM_H
#include <zmq.h>
#endif
