/* Optional C core of the worker pool's reader side (beat/workers.py).
 *
 * `shard` is `wirebeat.workers.shard_python` in C: it hands a batch of frames
 * of one source to the workers' pending lists, as `WorkerPool.on_frame` would
 * one frame at a time, without a Python call per frame. It routes only the
 * frames whose outermost layers are plain Ethernet + IPv4, or Ethernet + IPv6
 * without extension headers (most traffic); at any other frame it stops and
 * returns its position with `slow` set, and the pool routes that one frame
 * in Python (`_locate_ip`, `_announces`) before calling again. Frames, ticks
 * and shadow copies go into the lists as records (`workers._record`: a run
 * ["raw", source, heads, blob] of 24-byte heads and the frames' bytes), so a
 * batch is pickled as two buffers per run, not objects per frame. The Python
 * function is the reference (tests/beat/test_workcore.py runs both).
 *
 * `pcap_extent` and `shard_map` do the same for a classic pcap file mapped in
 * memory (workers._Mapped): the first finds whether every record is whole and
 * undamaged, the second routes records straight from the mapping into "map"
 * runs (a frame's offset in the file instead of its bytes); `feed` takes a
 * map run's offsets and the mapping in the worker.
 *
 *   shard(batch, start, source, crc, pendings, limit, next_tick, now, frames,
 *         announce, tunnel_ports, tick_s)
 *     -> (stop, slow, next_tick, now, frames, counts)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t crc_table[4][256];     /* [0]: the bytewise table; [1..3]: slicing by 4 */
static PyObject *str_raw;
static PyObject *str_map;
static PyObject *int_zero;

/* A record's head, as workers._HEAD ("<dqII"): ts, number, linktype, length. */
#define HEAD_SIZE 24
#define SHADOW (-1)
#define TICK (-2)

/* Little-endian fields of a record, as struct's "<": a plain copy on a little-endian
 * host (x86, arm), byte by byte elsewhere. (GCC keeps byte loops as byte stores.) */
static inline void put_le(unsigned char *p, uint64_t v, int size)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (size == 8) {
        memcpy(p, &v, 8);
    } else {
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, 4);
    }
#else
    for (int k = 0; k < size; k++) p[k] = (unsigned char)(v >> (8 * k));
#endif
}

static inline uint64_t get_le(const unsigned char *p, int size)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (size == 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
#else
    uint64_t v = 0;
    for (int k = 0; k < size; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
#endif
}

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 4; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = crc_table[t - 1][i] >> 8 ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

/* CRC-32 of `len` bytes (a multiple of 4: an address) on from `c` (inverted), four
 * bytes a step ("slicing by 4"; the same CRC as a byte a step, a quarter of the steps). */
static uint32_t crc32_words(uint32_t c, const unsigned char *p, Py_ssize_t len)
{
    for (Py_ssize_t i = 0; i < len; i += 4) {
        c ^= (uint32_t)get_le(p + i, 4);
        c = crc_table[3][c & 0xFF] ^ crc_table[2][c >> 8 & 0xFF] ^ crc_table[1][c >> 16 & 0xFF] ^ crc_table[0][c >> 24];
    }
    return c;
}

/* zlib.crc32(a + b, start), `len` 4 or 16 */
static uint32_t crc32_pair(const unsigned char *a, const unsigned char *b, Py_ssize_t len, uint32_t start)
{
    return ~crc32_words(crc32_words(~start, a, len), b, len);
}

/* memcmp(a, b, len) < 0, inline: addresses differ within their first bytes */
static inline int less(const unsigned char *a, const unsigned char *b, Py_ssize_t len)
{
    for (Py_ssize_t i = 0; i < len; i++)
        if (a[i] != b[i]) return a[i] < b[i];
    return 0;
}

/* A set of ports as a bitmap, made once per `shard` call: a frame's ports are looked up
 * without a Python int and a set probe each (two per frame when SIP is on). Only for
 * sets of exact ints; any other member (a float equal to a port ...) keeps the set. */
typedef struct {
    PyObject *set;          /* NULL: `bits` holds the set; else look the port up in it */
    unsigned char bits[65536 / 8];
} Ports;

/* 0, or -1 with an exception */
static int ports_init(Ports *p, PyObject *set)
{
    p->set = NULL;
    memset(p->bits, 0, sizeof p->bits);
    if (set == Py_None) return 0;
    Py_ssize_t pos = 0;
    PyObject *key;
    Py_hash_t hash;
    while (_PySet_NextEntry(set, &pos, &key, &hash)) {
        if (!PyLong_CheckExact(key)) { p->set = set; return 0; }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow || v < 0 || v > 65535) continue;      /* never a port: never found */
        p->bits[v >> 3] |= (unsigned char)(1u << (v & 7));
    }
    return 0;
}

static int port_in_set(PyObject *set, unsigned port);

/* port in the set: 1, 0, or -1 with an exception */
static inline int port_in(const Ports *p, unsigned port)
{
    if (p->set != NULL) return port_in_set(p->set, port);
    return (p->bits[port >> 3] >> (port & 7)) & 1;
}

/* port in the set (a Python set): 1, 0, or -1 with an exception */
static int port_in_set(PyObject *set, unsigned port)
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
                       int announcing, const Ports *announce, const Ports *tunnel_ports,
                       Py_ssize_t *index, int *shadow)
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
    } else if (len >= 14 && d[12] == 0x08 && d[13] == 0x06) {
        *index = 0;                         /* ARP: not IP, worker 0, as `_route` decides */
        *shadow = 0;
        return 0;
    } else {
        return 1;
    }
    uint32_t h = less(src, dst, alen) ? crc32_pair(src, dst, alen, crc) : crc32_pair(dst, src, alen, crc);
    *index = (Py_ssize_t)(h % (uint32_t)n);
    *shadow = 0;
    if (!announcing) return 0;
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

static int grow(PyObject *array, const void *bytes, Py_ssize_t len)
{
    if (!PyByteArray_CheckExact(array)) {
        PyErr_SetString(PyExc_TypeError, "a run's heads and frames must be bytearrays");
        return -1;
    }
    PyByteArrayObject *a = (PyByteArrayObject *)array;
    Py_ssize_t old = PyByteArray_GET_SIZE(array), need = old + len;
    if (need >= a->ob_alloc || a->ob_start != a->ob_bytes || a->ob_exports) {
        /* Twice the room: bytearray itself grows by an eighth, so a run of 1,024
         * frames would be moved about 8 times its size in reallocs. (A buffer export
         * makes the resize fail, as it should; a resize leaves ob_start at ob_bytes.) */
        if (PyByteArray_Resize(array, 2 * need + 64) < 0) return -1;
    }
    /* The size set here, not by PyByteArray_Resize: that gives back (realloc) what is
     * above twice the size, which a run's room is until it fills. */
    memcpy(a->ob_start + old, bytes, (size_t)len);
    Py_SET_SIZE(a, need);
    a->ob_start[need] = '\0';
    return 0;
}

static Py_ssize_t pending_size(PyObject *pending, Py_ssize_t enough);

/* A run's heads and frames start with some room and double when full: grown by half
 * from empty, they were moved (realloc) about 20 times per batch of 1,024 frames.
 * The first run of a list gets room for a batch of typical frames; later ones (sources
 * alternating: up to a batch of runs in a list) a little. */
#define HEADS_ROOM (16 * HEAD_SIZE)
#define BLOB_ROOM (8 * 1024)
#define FIRST_HEADS_ROOM (1024 * HEAD_SIZE)
#define FIRST_BLOB_ROOM (512 * 1024)

/* An empty bytearray with room for `room` bytes (0, more are grown by `grow`). */
static PyObject *reserved(Py_ssize_t room)
{
    PyObject *array = PyByteArray_FromStringAndSize(NULL, room);
    if (array == NULL) return NULL;
    Py_SET_SIZE(array, 0);
    PyByteArray_AS_STRING(array)[0] = '\0';
    return array;
}

/* The end of one pending list as a `shard` call last left it: the run it appends to
 * stays the list's last entry until the call returns (only the call appends to the list
 * meanwhile), so the next record for that list needs neither the run's kind and source
 * compared nor its head count worked out from Python objects. Valid while the list
 * still has `size` entries, the last being `run`. */
typedef struct {
    PyObject *run;          /* borrowed (the list holds it); NULL: nothing known */
    Py_ssize_t size;        /* the list's length when `run` was its last entry */
    Py_ssize_t before;      /* run[4]: the list's entries ahead of the run */
    int map;                /* a "map" run, else "raw" */
} Tail;

static inline int tail_holds(const Tail *tail, PyObject *pending, int map)
{
    Py_ssize_t size = PyList_GET_SIZE(pending);
    return tail->run != NULL && tail->map == map && tail->size == size
           && PyList_GET_ITEM(pending, size - 1) == tail->run;
}

/* `grow` when the bytearray has the room and nothing exports it (the usual case) */
static inline int append(PyObject *array, const void *bytes, Py_ssize_t len)
{
    PyByteArrayObject *a = (PyByteArrayObject *)array;
    if (!PyByteArray_CheckExact(array)) return grow(array, bytes, len);     /* (raises) */
    Py_ssize_t old = Py_SIZE(a), need = old + len;
    if (need >= a->ob_alloc || a->ob_start != a->ob_bytes || a->ob_exports)
        return grow(array, bytes, len);
    memcpy(a->ob_start + old, bytes, (size_t)len);
    Py_SET_SIZE(a, need);
    a->ob_start[need] = '\0';
    return 0;
}

/* workers._record: one record at the end of `pending`'s run of `source` (a new run
 * [kind, source, bytearray(), bytearray(), before] when the last entry is not one of
 * this kind and source). offset < 0: a "raw" run, the frame's bytes are appended to
 * run[3]; else a "map" run (the frame is in the source's mapped file), its offset there
 * is (8 bytes, little-endian). `tail`: what this call knows of the list's end. */
static int record(PyObject *pending, Tail *tail, PyObject *source, double ts, long long number,
                  uint32_t linktype, const char *data, Py_ssize_t len, long long offset)
{
    PyObject *kind = offset < 0 ? str_raw : str_map;
    Py_ssize_t size = PyList_GET_SIZE(pending);
    PyObject *run = size ? PyList_GET_ITEM(pending, size - 1) : NULL;
    int same = 0;
    if (tail_holds(tail, pending, offset >= 0)) {
        same = 1;
    } else if (run != NULL && PyList_CheckExact(run)) {
        if (PyList_GET_SIZE(run) != 5) {
            PyErr_SetString(PyExc_ValueError, "a run is a list of 5");
            return -1;
        }
        same = PyObject_RichCompareBool(PyList_GET_ITEM(run, 0), kind, Py_EQ);
        if (same > 0) same = PyObject_RichCompareBool(PyList_GET_ITEM(run, 1), source, Py_EQ);
        if (same < 0) return -1;
        if (same && PyByteArray_CheckExact(PyList_GET_ITEM(run, 2))) {
            Py_ssize_t before = PyLong_AsSsize_t(PyList_GET_ITEM(run, 4));
            if (before == -1 && PyErr_Occurred()) return -1;
            *tail = (Tail){run, size, before, offset >= 0};
        }
    }
    if (!same) {
        Py_ssize_t ahead = pending_size(pending, PY_SSIZE_T_MAX);
        if (ahead < 0) return -1;
        PyObject *heads = reserved(size ? HEADS_ROOM : FIRST_HEADS_ROOM);
        PyObject *blob = reserved(offset >= 0 ? (size ? 16 * 8 : 1024 * 8) : size ? BLOB_ROOM : FIRST_BLOB_ROOM);
        PyObject *before = PyLong_FromSsize_t(ahead);
        run = heads && blob && before ? PyList_New(5) : NULL;
        if (run == NULL) {
            Py_XDECREF(heads);
            Py_XDECREF(blob);
            Py_XDECREF(before);
            return -1;
        }
        PyList_SET_ITEM(run, 4, before);
        Py_INCREF(kind);
        Py_INCREF(source);
        PyList_SET_ITEM(run, 0, kind);
        PyList_SET_ITEM(run, 1, source);
        PyList_SET_ITEM(run, 2, heads);
        PyList_SET_ITEM(run, 3, blob);
        int r = PyList_Append(pending, run);
        Py_DECREF(run);
        if (r < 0) return -1;
        *tail = (Tail){run, size + 1, ahead, offset >= 0};
    }
    unsigned char head[HEAD_SIZE];
    uint64_t bits;
    memcpy(&bits, &ts, 8);
    put_le(head, bits, 8);
    put_le(head + 8, (uint64_t)(int64_t)number, 8);
    put_le(head + 16, linktype, 4);
    put_le(head + 20, (uint32_t)len, 4);
    if (append(PyList_GET_ITEM(run, 2), head, HEAD_SIZE) < 0) return -1;
    if (offset < 0) return append(PyList_GET_ITEM(run, 3), data, len);
    unsigned char at[8];
    put_le(at, (uint64_t)offset, 8);
    return append(PyList_GET_ITEM(run, 3), at, 8);
}

/* workers._size: entries in a pending list, every record of its runs counted (at
 * least `enough` when that many entries follow its last run); -1 with an exception. */
static Py_ssize_t pending_size(PyObject *pending, Py_ssize_t enough)
{
    Py_ssize_t k = PyList_GET_SIZE(pending), extra = 0;
    while (k && !PyList_CheckExact(PyList_GET_ITEM(pending, k - 1))) {
        k--;
        if (++extra >= enough) return extra;
    }
    if (!k) return extra;
    PyObject *run = PyList_GET_ITEM(pending, k - 1);
    if (PyList_GET_SIZE(run) != 5 || !PyByteArray_Check(PyList_GET_ITEM(run, 2))) {
        PyErr_SetString(PyExc_ValueError, "a run is a list of 5");
        return -1;
    }
    Py_ssize_t before = PyLong_AsSsize_t(PyList_GET_ITEM(run, 4));
    if (before == -1 && PyErr_Occurred()) return -1;
    return before + PyByteArray_GET_SIZE(PyList_GET_ITEM(run, 2)) / HEAD_SIZE + extra;
}

/* What both shards do with a plain frame routed to `index`: the clock's tick to every
 * list, the frame to its worker's, a shadow copy to the others'. 1 when a list it
 * touched is full (stop after this frame), 0 else, -1 with an exception. */
typedef struct {
    PyObject *pendings, *source;
    Py_ssize_t n, limit;
    double next_tick, now, tick_s;
    long long frames;
    Py_ssize_t *counts;
    Tail *tails;            /* one per list, as `record` last left it */
} Shard;

/* counts and tails for n lists, zeroed; 0, or -1 with MemoryError */
static int shard_alloc(Shard *sh)
{
    sh->counts = PyMem_Calloc((size_t)sh->n, sizeof(Py_ssize_t));
    sh->tails = PyMem_Calloc((size_t)sh->n, sizeof(Tail));
    if (sh->counts == NULL || sh->tails == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void shard_free(Shard *sh)
{
    PyMem_Free(sh->counts);
    PyMem_Free(sh->tails);
}

static int record_to(Shard *sh, Py_ssize_t skip, double ts, long long number, uint32_t linktype,
                     const char *data, Py_ssize_t len, long long offset)
{
    for (Py_ssize_t i = 0; i < sh->n; i++) {
        if (i != skip && record(PyList_GET_ITEM(sh->pendings, i), &sh->tails[i], sh->source, ts, number,
                                linktype, data, len, offset) < 0)
            return -1;
    }
    return 0;
}

/* pending_size(list k, limit), from the tail `record` left when it still holds */
static inline Py_ssize_t list_size(Shard *sh, Py_ssize_t k, int map)
{
    PyObject *pending = PyList_GET_ITEM(sh->pendings, k);
    const Tail *tail = &sh->tails[k];
    if (tail_holds(tail, pending, map))
        return tail->before + PyByteArray_GET_SIZE(PyList_GET_ITEM(tail->run, 2)) / HEAD_SIZE;
    return pending_size(pending, sh->limit);
}

static int place(Shard *sh, double t, uint32_t linktype, const char *bytes, Py_ssize_t len, long long offset,
                 Py_ssize_t index, int shadow)
{
    int full = 0;
    if (t >= sh->next_tick) {
        sh->next_tick = t + sh->tick_s;
        sh->now = t;
        if (record_to(sh, -1, t, TICK, linktype, bytes, len, offset) < 0) return -1;
        full = 1;
    }
    if (record(PyList_GET_ITEM(sh->pendings, index), &sh->tails[index], sh->source, t, sh->frames, linktype,
               bytes, len, offset) < 0)
        return -1;
    sh->frames++;
    sh->counts[index]++;
    if (shadow) {
        if (record_to(sh, index, t, SHADOW, linktype, bytes, len, offset) < 0) return -1;
        full = 1;
    }
    for (Py_ssize_t k = full ? 0 : index; k < (full ? sh->n : index + 1); k++) {
        Py_ssize_t size = list_size(sh, k, offset >= 0);
        if (size < 0) return -1;
        if (size >= sh->limit) return 1;
    }
    return 0;
}

/* The announcer and tunnel ports (NULL when nothing announces); PyMem_Free it. */
static int ports_make(PyObject *announce, PyObject *tunnel_ports, Ports **out)
{
    *out = NULL;
    if (announce == Py_None || PySet_GET_SIZE(announce) == 0) return 0;
    Ports *ports = PyMem_Malloc(2 * sizeof(Ports));
    if (ports == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (ports_init(ports, announce) < 0 || ports_init(ports + 1, tunnel_ports) < 0) {
        PyMem_Free(ports);
        return -1;
    }
    *out = ports;
    return 0;
}

static int check_lists(PyObject *pendings, PyObject *announce, PyObject *tunnel_ports)
{
    if ((announce != Py_None && !PyAnySet_Check(announce)) || !PyAnySet_Check(tunnel_ports)) {
        PyErr_SetString(PyExc_TypeError, "announce must be a set or None, tunnel_ports a set");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(pendings);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "no pending lists");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyList_Check(PyList_GET_ITEM(pendings, i))) {
            PyErr_SetString(PyExc_TypeError, "pendings must be lists");
            return -1;
        }
    }
    return 0;
}

static PyObject *counts_list(const Py_ssize_t *counts, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *c = PyLong_FromSsize_t(counts[k]);
        if (c == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, c);
    }
    return list;
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
    if (check_lists(pendings, announce, tunnel_ports) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(pendings);
    uint32_t crc = (uint32_t)crc_arg;
    Ports *ports;
    if (ports_make(announce, tunnel_ports, &ports) < 0) return NULL;
    Shard sh = {pendings, source, n, limit, next_tick, now, tick_s, frames, NULL, NULL};
    if (shard_alloc(&sh) < 0) {
        shard_free(&sh);
        PyMem_Free(ports);
        return NULL;
    }
    PyObject *list = NULL;
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
        const char *bytes = PyBytes_AS_STRING(data);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        int r = plain_route((const unsigned char *)bytes, len, crc, n, ports != NULL, ports,
                            ports ? ports + 1 : NULL, &index, &shadow);
        if (r < 0) goto error;
        if (r > 0) { slow = 1; break; }
        r = place(&sh, PyFloat_AS_DOUBLE(ts), 1, bytes, len, -1, index, shadow);
        if (r < 0) goto error;
        if (r > 0) { i++; break; }
    }
    list = counts_list(sh.counts, n);
    if (list == NULL) goto error;
    shard_free(&sh);
    PyMem_Free(ports);
    return Py_BuildValue("(nOddLN)", i, slow ? Py_True : Py_False, sh.next_tick, sh.now, sh.frames, list);
error:
    shard_free(&sh);
    PyMem_Free(ports);
    return NULL;
}

static inline uint32_t rd32(const unsigned char *p, int little)
{
    return little ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
                  : (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

/* workers.pcap_extent_python: how far classic pcap records run whole and undamaged
 * from `pos`, up to max_count of them (the reader's own checks: caplen within
 * max_caplen, the fraction below frac_max, the record inside the buffer)
 * -> (end, records). */
static PyObject *pcap_extent(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, max_count;
    int little;
    long long max_caplen, frac_max;
    if (!PyArg_ParseTuple(args, "y*npLLn", &buf, &pos, &little, &max_caplen, &frac_max, &max_count)) return NULL;
    const unsigned char *b = buf.buf;
    Py_ssize_t len = buf.len, count = 0;
    if (pos < 0) pos = 0;
    while (pos <= len - 16 && count < max_count) {
        uint32_t frac = rd32(b + pos + 4, little), caplen = rd32(b + pos + 8, little);
        if ((long long)caplen > max_caplen || (long long)frac >= frac_max || (Py_ssize_t)caplen > len - pos - 16) break;
        pos += 16 + (Py_ssize_t)caplen;
        count++;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(nn)", pos, count);
}

/* workers.shard_map_python: `shard` for a classic pcap file mapped in memory, whose
 * records pcap_extent found whole: up to `count` records from `pos` go to the lists as
 * "map" records (the frame's offset in the file, not its bytes). Stops after a record
 * that fills a list, and before one that is not plain (slow).
 *   -> (pos, records placed, the last one's position or -1, slow, next_tick, now, frames, counts) */
static PyObject *shard_map(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    PyObject *source, *pendings, *announce, *tunnel_ports;
    Py_ssize_t pos, count, limit;
    int little;
    double scale, next_tick, now, tick_s;
    unsigned long linktype, crc_arg;
    long long frames;
    if (!PyArg_ParseTuple(args, "y*nnpdkUkO!nddLOOd", &buf, &pos, &count, &little, &scale, &linktype, &source,
                          &crc_arg, &PyList_Type, &pendings, &limit, &next_tick, &now, &frames, &announce,
                          &tunnel_ports, &tick_s))
        return NULL;
    PyObject *result = NULL;
    Ports *ports = NULL;
    Shard sh = {pendings, source, PyList_GET_SIZE(pendings), limit, next_tick, now, tick_s, frames, NULL, NULL};
    if (check_lists(pendings, announce, tunnel_ports) < 0 || ports_make(announce, tunnel_ports, &ports) < 0)
        goto out;
    if (shard_alloc(&sh) < 0) goto out;
    const unsigned char *b = buf.buf;
    Py_ssize_t len = buf.len, done = 0, last = -1;
    int slow = 0;
    if (pos < 0) pos = 0;
    while (done < count) {
        if (pos > len - 16) {
            PyErr_SetString(PyExc_ValueError, "fewer records than counted");
            goto out;
        }
        uint32_t sec = rd32(b + pos, little), frac = rd32(b + pos + 4, little), caplen = rd32(b + pos + 8, little);
        if ((Py_ssize_t)caplen > len - pos - 16) {
            PyErr_SetString(PyExc_ValueError, "a record runs past the end");
            goto out;
        }
        const char *data = (const char *)b + pos + 16;
        Py_ssize_t index;
        int shadow, r = 1;
        if (linktype == 1) {
            r = plain_route((const unsigned char *)data, caplen, (uint32_t)crc_arg, sh.n, ports != NULL, ports,
                            ports ? ports + 1 : NULL, &index, &shadow);
            if (r < 0) goto out;
        }
        if (r > 0) {
            slow = 1;
            break;
        }
        /* as pcapfile's readers: seconds plus the fraction times its scale */
        double ts = (double)sec + (double)frac * scale;
        r = place(&sh, ts, (uint32_t)linktype, data, caplen, pos + 16, index, shadow);
        if (r < 0) goto out;
        last = pos;
        pos += 16 + (Py_ssize_t)caplen;
        done++;
        if (r > 0) break;
    }
    PyObject *list = counts_list(sh.counts, sh.n);
    if (list != NULL)
        result = Py_BuildValue("(nnnOddLN)", pos, done, last, slow ? Py_True : Py_False, sh.next_tick, sh.now,
                               sh.frames, list);
out:
    shard_free(&sh);
    PyMem_Free(ports);
    PyBuffer_Release(&buf);
    return result;
}

/* workers.feed_python in C: one run of records (its 24-byte heads and the frames'
 * bytes, as `record` writes them) fed to the worker's engine, one call per record
 * and no tuple, struct unpacking or loop in Python: on_frame(ts, linktype, data,
 * source) for a frame (after number_state(source)[0] = its number, when per-packet
 * documents are on), shadow(...) for a shadow copy, tick(source, ts, linktype, data)
 * for a tick. Returns the frames fed to on_frame. When on_frame is a list, a frame is
 * appended to it as (ts, linktype, data, 0) instead (a batch for Engine.on_batch, no
 * Python call per frame; number_state must then be None). With `offsets` (a "map"
 * run's 8-byte offsets), `blob` is the mapped file and each frame is at its offset. */
static PyObject *feed(PyObject *self, PyObject *args)
{
    PyObject *source, *on_frame, *number_state, *shadow, *tick, *offsets_arg = Py_None;
    Py_buffer heads, blob, offsets = {0};
    if (!PyArg_ParseTuple(args, "y*y*UOOOO|O", &heads, &blob, &source, &on_frame, &number_state, &shadow, &tick,
                          &offsets_arg))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = 0, off = 0;
    const unsigned char *h = heads.buf;
    int mapped = offsets_arg != Py_None;
    if (mapped && PyObject_GetBuffer(offsets_arg, &offsets, PyBUF_SIMPLE) < 0) {
        mapped = 0;
        goto out;
    }
    if (heads.len % HEAD_SIZE || (mapped && offsets.len != heads.len / HEAD_SIZE * 8)) {
        PyErr_SetString(PyExc_ValueError, "a run's heads are not whole records");
        goto out;
    }
    int collect = PyList_CheckExact(on_frame);
    if (collect && number_state != Py_None) {
        PyErr_SetString(PyExc_ValueError, "frames collected in a list carry no number state");
        goto out;
    }
    for (Py_ssize_t at = 0; at < heads.len; at += HEAD_SIZE) {
        uint64_t bits = get_le(h + at, 8), num = get_le(h + at + 8, 8);
        uint32_t linktype = (uint32_t)get_le(h + at + 16, 4), length = (uint32_t)get_le(h + at + 20, 4);
        double ts;
        memcpy(&ts, &bits, 8);
        int64_t number = (int64_t)num;
        if (mapped) {
            /* a "map" run: the frame is at its offset in the mapped file */
            const unsigned char *o = (const unsigned char *)offsets.buf + at / HEAD_SIZE * 8;
            uint64_t where = get_le(o, 8);
            if (where > (uint64_t)blob.len) {
                PyErr_SetString(PyExc_ValueError, "a record's offset is past the mapped file");
                goto out;
            }
            off = (Py_ssize_t)where;
        }
        if ((Py_ssize_t)length > blob.len - off) {
            PyErr_SetString(PyExc_ValueError, "a record is longer than the run's frames");
            goto out;
        }
        PyObject *callee;
        if (number >= 0) {
            if (number_state != Py_None) {
                PyObject *state = PyObject_CallOneArg(number_state, source);
                if (state == NULL) goto out;
                PyObject *value = PyLong_FromLongLong(number);
                int r = value != NULL ? PyObject_SetItem(state, int_zero, value) : -1;
                Py_XDECREF(value);
                Py_DECREF(state);
                if (r < 0) goto out;
            }
            callee = on_frame;
        } else if (number == SHADOW) {
            callee = shadow;
        } else {
            callee = tick;
        }
        PyObject *t = PyFloat_FromDouble(ts);
        PyObject *lt = PyLong_FromUnsignedLong(linktype);
        PyObject *data = PyBytes_FromStringAndSize((const char *)blob.buf + off, length);
        off += length;
        if (t != NULL && lt != NULL && data != NULL && collect && callee == on_frame) {
            /* the frame's tuple takes the three references (as pcap_records makes its records) */
            PyObject *frame = PyTuple_New(4);
            if (frame == NULL) {
                Py_DECREF(t);
                Py_DECREF(lt);
                Py_DECREF(data);
                goto out;
            }
            PyTuple_SET_ITEM(frame, 0, t);
            PyTuple_SET_ITEM(frame, 1, lt);
            PyTuple_SET_ITEM(frame, 2, data);
            Py_INCREF(int_zero);
            PyTuple_SET_ITEM(frame, 3, int_zero);
            int r = PyList_Append(on_frame, frame);
            Py_DECREF(frame);
            if (r < 0) goto out;
            count++;
            continue;
        }
        PyObject *r = NULL;
        if (t != NULL && lt != NULL && data != NULL) {
            if (callee == tick) {
                PyObject *argv[4] = {source, t, lt, data};
                r = PyObject_Vectorcall(callee, argv, 4, NULL);
            } else {
                PyObject *argv[4] = {t, lt, data, source};
                r = PyObject_Vectorcall(callee, argv, 4, NULL);
            }
        }
        Py_XDECREF(t);
        Py_XDECREF(lt);
        Py_XDECREF(data);
        if (r == NULL) goto out;
        Py_DECREF(r);
        if (callee == on_frame) count++;
    }
    result = PyLong_FromSsize_t(count);
out:
    PyBuffer_Release(&heads);
    PyBuffer_Release(&blob);
    if (mapped) PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"feed", feed, METH_VARARGS,
     "Feed one run of records to the worker's engine (see workers.feed_python)."},
    {"pcap_extent", pcap_extent, METH_VARARGS,
     "How far whole, undamaged classic pcap records run (see workers.pcap_extent_python)."},
    {"shard_map", shard_map, METH_VARARGS,
     "Hand records of a mapped classic pcap file to the workers' pending lists (see workers.shard_map_python)."},
    {"shard", shard, METH_VARARGS,
     "Hand a batch of one source's frames to the workers' pending lists (see workers.shard_python)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wirebeat._workcore",
                                    "Optional C core of the worker pool's reader (see beat/_workcore.c).", -1, methods};

PyMODINIT_FUNC PyInit__workcore(void)
{
    crc_init();
    str_raw = PyUnicode_InternFromString("raw");
    str_map = PyUnicode_InternFromString("map");
    int_zero = PyLong_FromLong(0);
    if (str_raw == NULL || str_map == NULL || int_zero == NULL) return NULL;
    return PyModule_Create(&module);
}
