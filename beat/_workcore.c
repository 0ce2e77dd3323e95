/* Optional C core of the worker pool's reader side (beat/workers.py).
 *
 * `shard` is `wirebeat.workers.shard_python` in C: it hands a batch of frames
 * of one source to the workers' pending lists, as `WorkerPool.on_frame` would
 * one frame at a time, without a Python call per frame. It routes only the
 * frames whose outermost layers are plain Ethernet + IPv4, or Ethernet + IPv6
 * without extension headers (most traffic); at any other frame it stops and
 * returns its position with `slow` set, and the pool routes that one frame
 * in Python (`_locate_ip`, `_announces`) before calling again. The Python
 * function is the reference (tests/beat/test_workcore.py runs both).
 *
 *   shard(batch, start, source, crc, pendings, limit, next_tick, now, frames,
 *         announce, tunnel_ports, tick_s)
 *     -> (stop, slow, next_tick, now, frames, counts)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc_table[256];
static PyObject *str_tick;
static PyObject *minus_one;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32(a + b, start) */
static uint32_t crc32_pair(const unsigned char *a, const unsigned char *b, Py_ssize_t len, uint32_t start)
{
    uint32_t c = ~start;
    for (Py_ssize_t i = 0; i < len; i++) c = crc_table[(c ^ a[i]) & 0xFF] ^ (c >> 8);
    for (Py_ssize_t i = 0; i < len; i++) c = crc_table[(c ^ b[i]) & 0xFF] ^ (c >> 8);
    return ~c;
}

/* port in the set (a Python set of ints): 1, 0, or -1 with an exception */
static int port_in(PyObject *set, unsigned port)
{
    PyObject *key = PyLong_FromUnsignedLong(port);
    if (key == NULL) return -1;
    int found = PySet_Contains(set, key);
    Py_DECREF(key);
    return found;
}

/* Where a plain frame goes: 0 routed (*index, *shadow set), 1 not plain (Python
 * routes it), -1 error. Mirrors shard_python's `_plain_route`. */
static int plain_route(const unsigned char *d, Py_ssize_t len, uint32_t crc, Py_ssize_t n,
                       PyObject *announce, PyObject *tunnel_ports, Py_ssize_t *index, int *shadow)
{
    const unsigned char *src, *dst;
    Py_ssize_t alen, l4;
    unsigned proto;
    int fragment;
    if (len >= 38 && d[12] == 8 && d[13] == 0) {
        src = d + 26; dst = d + 30; alen = 4;
        proto = d[23];
        l4 = 14 + (Py_ssize_t)(d[14] & 0x0F) * 4;
        fragment = (d[20] & 0x3F) || d[21];
    } else if (len >= 54 && d[12] == 0x86 && d[13] == 0xDD
               && d[20] != 0 && d[20] != 43 && d[20] != 60 && d[20] != 44) {
        src = d + 22; dst = d + 38; alen = 16;
        proto = d[20];
        l4 = 54;
        fragment = 0;
    } else {
        return 1;
    }
    uint32_t h = memcmp(src, dst, alen) < 0 ? crc32_pair(src, dst, alen, crc) : crc32_pair(dst, src, alen, crc);
    *index = (Py_ssize_t)(h % (uint32_t)n);
    *shadow = 0;
    if (announce == Py_None || PySet_GET_SIZE(announce) == 0) return 0;
    if (fragment) {
        *shadow = 1;
    } else if (proto == 17 || proto == 6) {
        if (len >= l4 + 4) {
            unsigned sport = d[l4] << 8 | d[l4 + 1], dport = d[l4 + 2] << 8 | d[l4 + 3];
            int found = port_in(announce, sport);
            if (found == 0) found = port_in(announce, dport);
            if (found < 0) return -1;
            if (found) {
                *shadow = 1;
            } else if (proto == 17) {
                found = port_in(tunnel_ports, dport);
                if (found < 0) return -1;
                if (found) return 1;        /* a tunnel: does it carry an announcement? Python looks */
            }
        }
    } else if (proto == 47) {
        return 1;                           /* GRE: as a tunnel */
    }
    return 0;
}

static int append_to(PyObject *pendings, Py_ssize_t n, Py_ssize_t skip, PyObject *entry)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i != skip && PyList_Append(PyList_GET_ITEM(pendings, i), entry) < 0) return -1;
    }
    return 0;
}

static PyObject *shard(PyObject *self, PyObject *args)
{
    PyObject *batch, *source, *pendings, *announce, *tunnel_ports;
    Py_ssize_t start, limit;
    unsigned long crc_arg;
    double next_tick, now, tick_s;
    long long frames;
    if (!PyArg_ParseTuple(args, "OnUkO!nddLOOd", &batch, &start, &source, &crc_arg, &PyList_Type, &pendings,
                          &limit, &next_tick, &now, &frames, &announce, &tunnel_ports, &tick_s))
        return NULL;
    if (!PyList_Check(batch) && !PyTuple_Check(batch)) {
        PyErr_SetString(PyExc_TypeError, "batch must be a list or a tuple");
        return NULL;
    }
    if ((announce != Py_None && !PyAnySet_Check(announce)) || !PyAnySet_Check(tunnel_ports)) {
        PyErr_SetString(PyExc_TypeError, "announce must be a set or None, tunnel_ports a set");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pendings);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "no pending lists");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyList_Check(PyList_GET_ITEM(pendings, i))) {
            PyErr_SetString(PyExc_TypeError, "pendings must be lists");
            return NULL;
        }
    }
    uint32_t crc = (uint32_t)crc_arg;
    Py_ssize_t *counts = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    if (counts == NULL) return PyErr_NoMemory();
    Py_ssize_t size = PySequence_Fast_GET_SIZE(batch), i = start < 0 ? 0 : start;
    int slow = 0;
    for (; i < size; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(batch, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < 3) { slow = 1; break; }
        PyObject *ts = PyTuple_GET_ITEM(item, 0), *linktype = PyTuple_GET_ITEM(item, 1);
        PyObject *data = PyTuple_GET_ITEM(item, 2);
        if (!PyFloat_CheckExact(ts) || !PyLong_CheckExact(linktype) || !PyBytes_CheckExact(data)) { slow = 1; break; }
        int overflow;
        if (PyLong_AsLongAndOverflow(linktype, &overflow) != 1) { slow = 1; break; }
        Py_ssize_t index;
        int shadow;
        int r = plain_route((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), crc, n,
                            announce, tunnel_ports, &index, &shadow);
        if (r < 0) goto error;
        if (r > 0) { slow = 1; break; }
        double t = PyFloat_AS_DOUBLE(ts);
        int full = 0;
        if (t >= next_tick) {
            next_tick = t + tick_s;
            now = t;
            PyObject *tick = PyTuple_Pack(5, str_tick, source, ts, linktype, data);
            if (tick == NULL) goto error;
            r = append_to(pendings, n, -1, tick);
            Py_DECREF(tick);
            if (r < 0) goto error;
            full = 1;
        }
        PyObject *number = PyLong_FromLongLong(frames);
        if (number == NULL) goto error;
        PyObject *entry = PyTuple_Pack(5, ts, linktype, data, source, number);
        Py_DECREF(number);
        if (entry == NULL) goto error;
        r = PyList_Append(PyList_GET_ITEM(pendings, index), entry);
        Py_DECREF(entry);
        if (r < 0) goto error;
        frames++;
        counts[index]++;
        if (shadow) {
            PyObject *copy = PyTuple_Pack(5, ts, linktype, data, source, minus_one);
            if (copy == NULL) goto error;
            r = append_to(pendings, n, index, copy);
            Py_DECREF(copy);
            if (r < 0) goto error;
            full = 1;
        }
        if (full) {
            for (Py_ssize_t k = 0; k < n; k++) {
                if (PyList_GET_SIZE(PyList_GET_ITEM(pendings, k)) >= limit) { i++; goto done; }
            }
        } else if (PyList_GET_SIZE(PyList_GET_ITEM(pendings, index)) >= limit) {
            i++;
            goto done;
        }
    }
done:;
    PyObject *list = PyList_New(n);
    if (list == NULL) goto error;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *c = PyLong_FromSsize_t(counts[k]);
        if (c == NULL) { Py_DECREF(list); goto error; }
        PyList_SET_ITEM(list, k, c);
    }
    PyMem_Free(counts);
    return Py_BuildValue("(nOddLN)", i, slow ? Py_True : Py_False, next_tick, now, frames, list);
error:
    PyMem_Free(counts);
    return NULL;
}

static PyMethodDef methods[] = {
    {"shard", shard, METH_VARARGS,
     "Hand a batch of one source's frames to the workers' pending lists (see workers.shard_python)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wirebeat._workcore",
                                    "Optional C core of the worker pool's reader (see beat/_workcore.c).", -1, methods};

PyMODINIT_FUNC PyInit__workcore(void)
{
    crc_init();
    str_tick = PyUnicode_InternFromString("tick");
    minus_one = PyLong_FromLong(-1);
    if (str_tick == NULL || minus_one == NULL) return NULL;
    return PyModule_Create(&module);
}
