/* What wirebeat._flowcore offers other C code (beat/_speedups.c's frame_batch), as the
 * PyCapsule FLOWCORE_API_NAME: the flow table's `account` for a frame the caller has
 * already walked, without the Python arguments the engine builds for it. */
#ifndef WIREBEAT_FLOWAPI_H
#define WIREBEAT_FLOWAPI_H

#define FLOWCORE_API_NAME "wirebeat._flowcore._C_API"

typedef struct {
    PyTypeObject *table_type;       /* FlowTable.account is one of these when the C core runs */
    /* table.account(ts, linktype, frame, vlans, src, dst, proto, payload, ()), with vlans as
     * nvlans C ints and the payload as `l4`/`l4len` (`payload`: the same bytes as an object, or
     * NULL: made only if needed). 0, or -1 with an exception set. */
    int (*account)(PyObject *table, PyObject *ts, PyObject *linktype, PyObject *frame, int nvlans,
                   const unsigned *vlans, PyObject *src, PyObject *dst, int proto,
                   const unsigned char *l4, Py_ssize_t l4len, PyObject *payload);
} flowcore_api_t;

#endif
