/* What wirebeat._flowcore offers other C code (beat/_speedups.c's frame_batch), as the
 * PyCapsule FLOWCORE_API_NAME: the flow table's `account` for a frame the caller has
 * already walked, without the Python arguments the engine builds for it. */
#ifndef WIREBEAT_FLOWAPI_H
#define WIREBEAT_FLOWAPI_H

/* (_C_API2: the addresses as C bytes; _C_API3: with `prefetch`. A _speedups built for an
 * earlier form finds no capsule of its name and makes the Python call instead) */
#define FLOWCORE_API_NAME "wirebeat._flowcore._C_API3"
#define FLOWCORE_API_ATTR "_C_API3"

typedef struct {
    PyTypeObject *table_type;       /* FlowTable.account is one of these when the C core runs */
    /* table.account(ts, linktype, frame, vlans, src, dst, proto, payload, ()), with vlans as
     * nvlans C ints, the addresses as `alen` bytes at src and dst (bytes objects are made only
     * for a flow's key tuple, not per packet) and the payload as `l4`/`l4len` (`payload`: the
     * same bytes as an object, or NULL: made only if needed). 0, or -1 with an exception set. */
    int (*account)(PyObject *table, PyObject *ts, PyObject *linktype, PyObject *frame, int nvlans,
                   const unsigned *vlans, const unsigned char *src, const unsigned char *dst, Py_ssize_t alen,
                   int proto, const unsigned char *l4, Py_ssize_t l4len, PyObject *payload);
    /* the same frame's arguments (no ts, no payload object), before `account`: brings the memory
     * account will read into the cache while the caller does other work. No result, no error. */
    void (*prefetch)(PyObject *table, PyObject *linktype, PyObject *frame, int nvlans, const unsigned *vlans,
                     const unsigned char *src, const unsigned char *dst, Py_ssize_t alen, int proto,
                     const unsigned char *l4, Py_ssize_t l4len);
} flowcore_api_t;

#endif
