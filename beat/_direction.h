/* network.direction (beat/direction.py) of two packed addresses, from the ranges
   NetworkDirection.packed_ranges gives when every range is a CIDR: (IPv4 host-side,
   IPv4 internal, IPv6 host-side, IPv6 internal, whether there are internal networks),
   each range a mask and a network of `size` bytes, big-endian. Shared by _doctext
   (transactions) and _flowcore (flows); tests/beat/test_doctext_c.py and
   tests/beat/test_flowcore.py hold each to NetworkDirection. */
#ifndef WIREBEAT_DIRECTION_H
#define WIREBEAT_DIRECTION_H

#include <Python.h>

/* The verdicts, as indexes into DIRECTION_WORDS (NetworkDirection._verdict's words). */
enum { DIRECTION_UNKNOWN, DIRECTION_INGRESS, DIRECTION_EGRESS, DIRECTION_INTERNAL, DIRECTION_OUTBOUND,
       DIRECTION_INBOUND, DIRECTION_EXTERNAL, DIRECTION_N };
static const char *const DIRECTION_WORDS[DIRECTION_N] = {"unknown", "ingress", "egress", "internal",
                                                        "outbound", "inbound", "external"};

/* Whether a packed address lies in one of `pairs`: bytes of (mask, network) pairs of
   `size` bytes each. */
static int in_ranges(PyObject *pairs, const unsigned char *addr, int size) {
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(pairs);
    Py_ssize_t n = PyBytes_GET_SIZE(pairs) / (2 * size);
    for (Py_ssize_t k = 0; k < n; k++, p += 2 * size) {
        int i = 0;
        while (i < size && (addr[i] & p[i]) == p[size + i]) i++;
        if (i == size) return 1;
    }
    return 0;
}

/* NetworkDirection.of_packed of two packed addresses of `size` (4 or 16) bytes from
   `ranges` (packed_ranges): a DIRECTION_* verdict, or -1 for a tuple of another shape. */
static int direction_verdict(PyObject *ranges, const unsigned char *source, const unsigned char *destination,
                             int size) {
    if (!PyTuple_CheckExact(ranges) || PyTuple_GET_SIZE(ranges) != 5 || (size != 4 && size != 16)) return -1;
    PyObject *host = PyTuple_GET_ITEM(ranges, size == 4 ? 0 : 2),
             *internal = PyTuple_GET_ITEM(ranges, size == 4 ? 1 : 3), *tests = PyTuple_GET_ITEM(ranges, 4);
    if (!PyBytes_CheckExact(host) || !PyBytes_CheckExact(internal) || !PyBool_Check(tests)
        || PyBytes_GET_SIZE(host) % (2 * size) || PyBytes_GET_SIZE(internal) % (2 * size))
        return -1;
    if (in_ranges(host, destination, size)) return DIRECTION_INGRESS;
    if (in_ranges(host, source, size)) return DIRECTION_EGRESS;
    if (tests == Py_False) return DIRECTION_UNKNOWN;
    int inside = in_ranges(internal, destination, size);
    if (in_ranges(internal, source, size)) return inside ? DIRECTION_INTERNAL : DIRECTION_OUTBOUND;
    return inside ? DIRECTION_INBOUND : DIRECTION_EXTERNAL;
}

#endif
