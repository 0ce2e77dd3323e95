/* wirebeat._flowcore: optional C core of the flow table (beat/flows.py).
 *
 * beat/flows.py stays the reference and keeps the data: the table is its
 * `FlowTable.flows` dict (both directions' key tuples -> the record; a key's
 * direction is 0 when it is the record's R_KEY, else 1), records are Record
 * objects made here (flows.py's lists with the numbers inline, read and written
 * through the sequence protocol with its R_* / T_* constants: LAYOUT below;
 * flows.py refuses this module when they differ). Its R_TEXT / R_BODY caches hold
 * its own tuples of str; this file keeps R_TEXT as one bytes object of its
 * own instead (parts_of) and no R_BODY, and each side rebuilds the cache it
 * does not recognise. This file only does, on those same objects, the
 * work that runs per packet and per report:
 *
 *   Table(table, reporter_core, account_python, flow_id_python, ip_packed)
 *     Called as FlowTable.account(ts, linktype, frame, vlans, src, dst, proto,
 *     payload[, outer]): the key tuple, the lookup, the counts and the TCP
 *     sequence / retransmission bookkeeping, new flows and MAC-order aliases
 *     (_open, _alias) and a full table's eviction (_evict). The rare cases call
 *     the table's own Python methods: TCP control flags or the handshake's
 *     awaited ACK (_control), keys of unusual shape (_open, _alias). Arguments of
 *     other types than the engine passes (not bytes, keywords) go to
 *     `account_python` whole.
 *     From C, frame_batch (beat/_speedups.c) calls the same accounting as account_raw
 *     (beat/_flowapi.h), through a cache of key tuples instead of a tuple per packet.
 *     sweep_records(now, report_due, report_all, period_ago, idle_before,
 *       closed_before) -> periodic reports made: FlowTable.sweep's loop over
 *     the records, ends (_end's work, the ended-flow memory included) and
 *     reports in C.
 *     finish_records(): FlowTable.finish's loop, the same way.
 *     flow_id(flow_key): FlowTable.flow_id_python (a transaction's flow.id), answered
 *     from the record of the last packet's flow when that is exactly the lookups' answer
 *     (id_of_last), else looked up; flow_ids() counts both ways.
 *     link(rec), unlink(rec), evict(), order(): the open order (FlowTable.order of the
 *     Python path), here a list linked through the records (order_link).
 *   Reporter(reporter, report_python, assign_id, iso_time, fragment, community_id,
 *            transports, tail, id_source)
 *     Called as FlowReporter.report(source, rec, final, reason, report_ts):
 *     the JSON text report, written from the record's numbers and the flow's
 *     static parts (made at its first report: addresses, MACs, ports, flow.id,
 *     community id, network.direction; times, address text and community id
 *     written here, direction from NetworkDirection's cache). Whatever is not
 *     the common case (dict reports, negative counts, sums beyond 64 bits, a
 *     report time that is not a float, durations out of range, text without
 *     UTF-8, keys of unusual shape, records that are not Records) goes to
 *     `report_python`, the Python method, before anything but the caches
 *     (flow.id, R_TEXT) changed.
 *
 * tests/beat/test_flowcore.py runs both paths on the same packets (hostile
 * ones too) and requires identical tables, records and bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <structmember.h>

enum { R_FIRST_TS, R_LAST_TS, R_PACKETS, R_PACKETS_REV, R_BYTES, R_BYTES_REV, R_KEY, R_REV_KEY,
       R_REPORTS, R_CLOSED, R_TCP, R_ID, R_ICMP, R_ALIAS, R_STATIC, R_TEXT, R_BODY, R_SIZE };
enum { EVICTION_WINDOW = 8 };     /* flows.py's: checked with LAYOUT */
enum { T_HIGH, T_HIGH_REV, T_RETRANS, T_RETRANS_REV, T_SYN, T_FIN, T_RST, T_FIN_DIRS,
       T_SYN_TS, T_SYN_DIR, T_SYNACK_TS, T_ACK_TS, T_AWAIT_ACK_DIR, T_SIZE };

static PyObject *small_int[3];     /* -1, 0, 1 */
static PyObject *str_builder, *str_direction, *str_of_packed, *str_idle, *str_as_text, *str_publish, *str_publish_many, *str_max_flows, *str_final_reports, *str_end_of_input, *str_last, *str_popitem, *str_values, *str_evicted, *str_ended_forgotten, *str_fin, *str_rst, *str_transport, *str_client_ip, *str_server_ip, *str_client_port, *str_server_port, *empty_bytes, *empty_tuple;

/* ---- small helpers ------------------------------------------------------- */

/* An exact int that fits a long long: 1 and *v; else 0 (no error set). */
static inline int get_ll(PyObject *o, long long *v)
{
    if (!PyLong_CheckExact(o)) return 0;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return 0;
    if (*v == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
    return 1;
}

/* A new tuple of objects the cyclic garbage collector does not track (str, int, float,
 * bytes, orjson.Fragment, tuples of those) leaves its lists, as its first collection would
 * have decided: it cannot be part of a cycle, and collections no longer walk it. */
static inline PyObject *untracked(PyObject *tuple)
{
    if (tuple == NULL || !PyObject_GC_IsTracked(tuple)) return tuple;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (PyObject_GC_IsTracked(PyTuple_GET_ITEM(tuple, i))) return tuple;
    PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* A flow key (or reverse key, or endpoints) leaves the collector's lists with the tuples
 * in it: they hold bytes, numbers and tuples of those, never a cycle; a collection no
 * longer walks every new flow's keys (on busy links that walk was a cache miss per item). */
static PyObject *untracked_key(PyObject *key)
{
    if (key == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        PyObject *item = PyTuple_GET_ITEM(key, i);
        if (PyTuple_CheckExact(item)) untracked(item);
    }
    return untracked(key);
}

/* ---- Record: a flow record as a C object --------------------------------------- */
/* A flow record of the C core: the list flows.py makes (R_* items, the TCP part's T_* items)
 * as one object with its numbers inline: times as doubles (a Python float is a double: the
 * same values), counts as 64-bit ints, and objects only for what must be objects (keys,
 * flow.id, the closing reason, ICMP type/code, the MAC-order alias, the report caches). It
 * implements the sequence protocol with flows.py's indexes, so Python code reads and writes
 * it as it does the list (`rec[R_PACKETS] += 1`, `rec[R_TCP][T_SYN]`); rec[R_TCP] is None or
 * a view (TcpView) that reads and writes the record's TCP part. Values the fields cannot hold
 * are refused: a time that is no real number (TypeError), a count past 64 bits
 * (OverflowError). The C paths read and write the fields directly: accounting a packet makes
 * no Python object. Records never refer back to what refers to them (the dict, the table):
 * not tracked by the cyclic garbage collector. */
typedef union { long long i; double f; } tslot_t;

typedef struct RecordObject {
    PyObject_VAR_HEAD               /* ob_size: T_SIZE when it has room for a TCP part, else 0 */
    /* what reports and sweeps read */
    PyObject *key, *rev_key, *closed, *id, *icmp, *alias, *statics, *text, *body;     /* NULL: None */
    long long reports;              /* R_REPORTS */
    /* hash(key), hash(rev_key), -1 when not known yet: a flow's end finds its entries in the
     * table by them instead of hashing its 8-tuples again (~650 instructions each) */
    Py_hash_t khash[2];
    /* FlowTable._endpoints(key) as open_entry put it in by_endpoints, and its hash (NULL: not
     * known, made from the key): the flow's end finds its entries in by_endpoints and `ended`
     * by it, the dict's own key object, without building, hashing and comparing a new tuple */
    PyObject *ends;
    Py_hash_t ends_hash;
    Py_ssize_t cpair[2];            /* key cache pairs holding it, as index + 1 (0: none) */
    /* its table's open order (see order_link): the flows opened before and after it, and the
     * table whose order holds it (NULL: none; not a reference: the table lets go first) */
    struct RecordObject *older, *newer;
    void *order_owner;
    /* what a packet reads and writes, together at the end (56 bytes, TCP 160) */
    unsigned short t_none;          /* bits (1 << T_x) of the TCP times that are None */
    unsigned char has_tcp;          /* rec[R_TCP] is not None */
    unsigned char rev_same;         /* rev_key == key (a host talking to itself on one port) */
    unsigned char cached_many;      /* the key cache holds it in more pairs than cpair names */
    double ts[2];                   /* R_FIRST_TS, R_LAST_TS */
    long long n[4];                 /* R_PACKETS, R_PACKETS_REV, R_BYTES, R_BYTES_REV */
    tslot_t t[];                    /* the TCP part, only in TCP flows' records (T_SYN_TS, T_SYNACK_TS,
                                     * T_ACK_TS: f; the rest: i) */
} RecordObject;

/* Where each T_* item of a record's TCP part is kept: first what every TCP packet reads and
 * writes (the highest sequence ends and the handshake's awaited direction, right after the
 * counts: a packet touches two cache lines of its record, not three), then the rest. The T_*
 * indexes stay flows.py's (LAYOUT); only the C code knows the places. */
static const unsigned char TCP_AT[T_SIZE] = {
    [T_HIGH] = 0, [T_HIGH_REV] = 1, [T_AWAIT_ACK_DIR] = 2, [T_RETRANS] = 3, [T_RETRANS_REV] = 4,
    [T_SYN] = 5, [T_FIN] = 6, [T_RST] = 7, [T_FIN_DIRS] = 8, [T_SYN_TS] = 9, [T_SYN_DIR] = 10,
    [T_SYNACK_TS] = 11, [T_ACK_TS] = 12};
#define TCP_SLOT(r, i) ((r)->t[TCP_AT[i]])

typedef struct {
    PyObject_HEAD
    RecordObject *rec;
} TcpViewObject;

static PyTypeObject RecordType, TcpViewType;
#define IS_RECORD(o) Py_IS_TYPE((o), &RecordType)
#define IS_TIME_SLOT(i) ((i) == T_SYN_TS || (i) == T_SYNACK_TS || (i) == T_ACK_TS)

static PyObject **record_obj_slot(RecordObject *r, Py_ssize_t i)
{
    switch (i) {
    case R_KEY: return &r->key;
    case R_REV_KEY: return &r->rev_key;
    case R_CLOSED: return &r->closed;
    case R_ID: return &r->id;
    case R_ICMP: return &r->icmp;
    case R_ALIAS: return &r->alias;
    case R_STATIC: return &r->statics;
    case R_TEXT: return &r->text;
    case R_BODY: return &r->body;
    default: return NULL;
    }
}

static inline PyObject *or_none(PyObject *o) { return Py_NewRef(o ? o : Py_None); }

/* A new record, zeroed, with room for a TCP part or without (a UDP flow's is 104 bytes smaller) */
static RecordObject *record_alloc(int tcp)
{
    size_t size = sizeof(RecordObject) + (tcp ? T_SIZE * sizeof(tslot_t) : 0);
    RecordObject *r = (RecordObject *)PyObject_Malloc(size);
    if (r == NULL) return (RecordObject *)PyErr_NoMemory();
    memset(r, 0, size);
    PyObject_InitVar((PyVarObject *)r, &RecordType, tcp ? T_SIZE : 0);
    r->khash[0] = r->khash[1] = -1;
    return r;
}

/* _new_tcp(): -1 for the high marks and directions, 0 for the counts, None for the times
 * (a record with room for it) */
static void tcp_reset(RecordObject *r)
{
    for (int i = 0; i < T_SIZE; i++) r->t[i].i = 0;
    TCP_SLOT(r, T_HIGH).i = TCP_SLOT(r, T_HIGH_REV).i = TCP_SLOT(r, T_SYN_DIR).i = TCP_SLOT(r, T_AWAIT_ACK_DIR).i = -1;
    r->t_none = (1 << T_SYN_TS) | (1 << T_SYNACK_TS) | (1 << T_ACK_TS);
    r->has_tcp = 1;
}

/* A time for a record: float(v) of a real number; -1 with an exception otherwise. */
static int time_of(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v)) { *out = PyFloat_AS_DOUBLE(v); return 0; }
    if (!PyLong_Check(v) && !PyFloat_Check(v)) {
        PyErr_Format(PyExc_TypeError, "flow record times are real numbers, not %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    double f = PyFloat_AsDouble(v);      /* (the field keeps its value when it fails) */
    if (f == -1.0 && PyErr_Occurred()) return -1;
    *out = f;
    return 0;
}

static int count_of(PyObject *v, long long *out)
{
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "flow record counts are ints, not %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError))
            PyErr_SetString(PyExc_OverflowError, "flow record counts are 64-bit ints");
        return -1;
    }
    *out = x;
    return 0;
}

static int tcp_set(RecordObject *r, Py_ssize_t i, PyObject *v)
{
    if (i < 0 || i >= T_SIZE) { PyErr_SetString(PyExc_IndexError, "TCP part index out of range"); return -1; }
    if (v == NULL) { PyErr_SetString(PyExc_TypeError, "TCP part items cannot be deleted"); return -1; }
    if (IS_TIME_SLOT(i)) {
        if (v == Py_None) { r->t_none |= (unsigned short)(1 << i); return 0; }
        double f;
        if (time_of(v, &f) < 0) return -1;
        TCP_SLOT(r, i).f = f;
        r->t_none &= (unsigned short)~(1 << i);
        return 0;
    }
    long long x;
    if (count_of(v, &x) < 0) return -1;
    TCP_SLOT(r, i).i = x;
    return 0;
}

static PyObject *tcp_get(RecordObject *r, Py_ssize_t i)
{
    if (i < 0 || i >= T_SIZE) { PyErr_SetString(PyExc_IndexError, "TCP part index out of range"); return NULL; }
    if (IS_TIME_SLOT(i)) return r->t_none & (1 << i) ? Py_NewRef(Py_None) : PyFloat_FromDouble(TCP_SLOT(r, i).f);
    return PyLong_FromLongLong(TCP_SLOT(r, i).i);
}

/* rec[R_TCP] = None, or any sequence of T_SIZE items (a list, another record's view) */
static int tcp_assign(RecordObject *r, PyObject *v)
{
    if (v == Py_None) { r->has_tcp = 0; return 0; }
    if (Py_SIZE(r) != T_SIZE) {
        PyErr_SetString(PyExc_ValueError, "this flow record was made without room for a TCP part");
        return -1;
    }
    PyObject *seq = PySequence_Fast(v, "a flow record's TCP part is None or a sequence");
    if (seq == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != T_SIZE) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a flow record's TCP part has %d items", T_SIZE);
        return -1;
    }
    tslot_t saved[T_SIZE];          /* all or nothing */
    unsigned short saved_none = r->t_none;
    unsigned char saved_has = r->has_tcp;
    memcpy(saved, r->t, sizeof saved);
    tcp_reset(r);
    for (int i = 0; i < T_SIZE; i++)
        if (tcp_set(r, i, PySequence_Fast_GET_ITEM(seq, i)) < 0) {
            memcpy(r->t, saved, sizeof saved);
            r->t_none = saved_none;
            r->has_tcp = saved_has;
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    return 0;
}

static void record_rev_same(RecordObject *r)
{
    r->rev_same = 0;
    if (r->key != NULL && r->rev_key != NULL) {
        int same = r->key == r->rev_key ? 1 : PyObject_RichCompareBool(r->key, r->rev_key, Py_EQ);
        if (same < 0) PyErr_Clear();
        r->rev_same = same > 0;
    }
}

static Py_ssize_t record_length(PyObject *self) { return R_SIZE; }

static PyObject *record_item(PyObject *self, Py_ssize_t i)
{
    RecordObject *r = (RecordObject *)self;
    switch (i) {
    case R_FIRST_TS: case R_LAST_TS: return PyFloat_FromDouble(r->ts[i - R_FIRST_TS]);
    case R_PACKETS: case R_PACKETS_REV: case R_BYTES: case R_BYTES_REV: return PyLong_FromLongLong(r->n[i - R_PACKETS]);
    case R_REPORTS: return PyLong_FromLongLong(r->reports);
    case R_TCP: {
        if (!r->has_tcp) Py_RETURN_NONE;
        TcpViewObject *v = PyObject_New(TcpViewObject, &TcpViewType);
        if (v == NULL) return NULL;
        v->rec = (RecordObject *)Py_NewRef(self);
        return (PyObject *)v;
    }
    default: {
        PyObject **slot = record_obj_slot(r, i);
        if (slot == NULL) { PyErr_SetString(PyExc_IndexError, "flow record index out of range"); return NULL; }
        return or_none(*slot);
    }
    }
}

static int record_ass_item(PyObject *self, Py_ssize_t i, PyObject *v)
{
    RecordObject *r = (RecordObject *)self;
    if (i < 0 || i >= R_SIZE) { PyErr_SetString(PyExc_IndexError, "flow record index out of range"); return -1; }
    if (v == NULL) { PyErr_SetString(PyExc_TypeError, "flow record items cannot be deleted"); return -1; }
    switch (i) {
    case R_FIRST_TS: case R_LAST_TS: return time_of(v, &r->ts[i - R_FIRST_TS]);
    case R_PACKETS: case R_PACKETS_REV: case R_BYTES: case R_BYTES_REV: return count_of(v, &r->n[i - R_PACKETS]);
    case R_REPORTS: return count_of(v, &r->reports);
    case R_TCP: return tcp_assign(r, v);
    default: {
        PyObject **slot = record_obj_slot(r, i);
        Py_XSETREF(*slot, v == Py_None ? NULL : Py_NewRef(v));
        if (i == R_ID) Py_CLEAR(r->text);       /* it holds flow.id's text (see PARTS) */
        if (i == R_KEY || i == R_REV_KEY) {
            r->khash[i - R_KEY] = -1;       /* another key: its hash is not known */
            if (i == R_KEY) Py_CLEAR(r->ends);      /* nor its endpoints */
            record_rev_same(r);
        }
        return 0;
    }
    }
}

/* Record(items): a record from a sequence of R_SIZE items laid out as flows.py's list */
static PyObject *record_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *items;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) { PyErr_SetString(PyExc_TypeError, "Record(items)"); return NULL; }
    if (!PyArg_ParseTuple(args, "O:Record", &items)) return NULL;
    PyObject *seq = PySequence_Fast(items, "Record(items): a sequence of a flow record's items");
    if (seq == NULL) return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != R_SIZE) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "a flow record has %d items", R_SIZE);
        return NULL;
    }
    if (type != &RecordType) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_TypeError, "Record cannot be subclassed");
        return NULL;
    }
    RecordObject *r = record_alloc(PySequence_Fast_GET_ITEM(seq, R_TCP) != Py_None);
    if (r == NULL) { Py_DECREF(seq); return NULL; }
    for (int i = 0; i < R_SIZE; i++)
        if (record_ass_item((PyObject *)r, i, PySequence_Fast_GET_ITEM(seq, i)) < 0) {
            Py_DECREF(seq);
            Py_DECREF(r);
            return NULL;
        }
    Py_DECREF(seq);
    return (PyObject *)r;
}

static void record_dealloc(RecordObject *r)
{
    Py_XDECREF(r->key); Py_XDECREF(r->rev_key); Py_XDECREF(r->closed); Py_XDECREF(r->id); Py_XDECREF(r->icmp);
    Py_XDECREF(r->alias); Py_XDECREF(r->statics); Py_XDECREF(r->text); Py_XDECREF(r->body); Py_XDECREF(r->ends);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* rec[a:b] and rec[i]: slices as lists (tests compare records as lists) */
static PyObject *seq_subscript(PyObject *self, PyObject *item, Py_ssize_t size, ssizeargfunc get)
{
    if (PyIndex_Check(item)) {
        Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        if (i < 0) i += size;
        if (i < 0 || i >= size) { PyErr_SetString(PyExc_IndexError, "flow record index out of range"); return NULL; }
        return get(self, i);
    }
    if (!PySlice_Check(item)) {
        PyErr_Format(PyExc_TypeError, "flow record indices are ints or slices, not %.100s", Py_TYPE(item)->tp_name);
        return NULL;
    }
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(item, &start, &stop, &step) < 0) return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(size, &start, &stop, step);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0, i = start; k < n; k++, i += step) {
        PyObject *v = get(self, i);
        if (v == NULL) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, k, v);
    }
    return out;
}

static int seq_ass_subscript(PyObject *self, PyObject *item, PyObject *v, Py_ssize_t size, ssizeobjargproc set)
{
    if (!PyIndex_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "flow record items are set one index at a time");
        return -1;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(item, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0) i += size;
    return set(self, i, v);
}

static PyObject *record_subscript(PyObject *self, PyObject *item)
{
    return seq_subscript(self, item, R_SIZE, record_item);
}

static int record_ass_subscript(PyObject *self, PyObject *item, PyObject *v)
{
    return seq_ass_subscript(self, item, v, R_SIZE, record_ass_item);
}

/* Name([items]): a record or TCP view shown with its items as a list */
static PyObject *seq_repr(PyObject *self, const char *name, binaryfunc subscript)
{
    PyObject *items, *slice = PySlice_New(NULL, NULL, NULL);
    if (slice == NULL) return NULL;
    items = subscript(self, slice);
    Py_DECREF(slice);
    if (items == NULL) return NULL;
    PyObject *text = PyUnicode_FromFormat("%s(%R)", name, items);
    Py_DECREF(items);
    return text;
}

static PyObject *record_repr(PyObject *self) { return seq_repr(self, "Record", record_subscript); }

static PySequenceMethods record_as_sequence = {
    .sq_length = record_length,
    .sq_item = record_item,
    .sq_ass_item = record_ass_item,
};

static PyMappingMethods record_as_mapping = {
    .mp_length = record_length,
    .mp_subscript = record_subscript,
    .mp_ass_subscript = record_ass_subscript,
};

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._flowcore.Record",
    .tp_doc = "Record(items): a flow record (flows.py's R_* list) with its numbers inline",
    .tp_basicsize = sizeof(RecordObject),
    .tp_itemsize = sizeof(tslot_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_SEQUENCE,
    .tp_new = record_new,
    .tp_free = PyObject_Free,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_as_sequence = &record_as_sequence,
    .tp_as_mapping = &record_as_mapping,
    .tp_repr = record_repr,
    .tp_hash = PyObject_HashNotImplemented,
};

static Py_ssize_t tcpview_length(PyObject *self) { return T_SIZE; }
static PyObject *tcpview_item(PyObject *self, Py_ssize_t i)
{
    TcpViewObject *v = (TcpViewObject *)self;
    if (!v->rec->has_tcp) { PyErr_SetString(PyExc_ValueError, "the flow record has no TCP part any more"); return NULL; }
    return tcp_get(v->rec, i);
}
static int tcpview_ass_item(PyObject *self, Py_ssize_t i, PyObject *val)
{
    TcpViewObject *v = (TcpViewObject *)self;
    if (!v->rec->has_tcp) { PyErr_SetString(PyExc_ValueError, "the flow record has no TCP part any more"); return -1; }
    return tcp_set(v->rec, i, val);
}
static PyObject *tcpview_subscript(PyObject *self, PyObject *item)
{
    return seq_subscript(self, item, T_SIZE, tcpview_item);
}
static int tcpview_ass_subscript(PyObject *self, PyObject *item, PyObject *v)
{
    return seq_ass_subscript(self, item, v, T_SIZE, tcpview_ass_item);
}
static void tcpview_dealloc(TcpViewObject *v)
{
    Py_DECREF(v->rec);
    PyObject_Free(v);
}
static PyObject *tcpview_repr(PyObject *self) { return seq_repr(self, "TcpView", tcpview_subscript); }

static PySequenceMethods tcpview_as_sequence = {
    .sq_length = tcpview_length,
    .sq_item = tcpview_item,
    .sq_ass_item = tcpview_ass_item,
};

static PyMappingMethods tcpview_as_mapping = {
    .mp_length = tcpview_length,
    .mp_subscript = tcpview_subscript,
    .mp_ass_subscript = tcpview_ass_subscript,
};

static PyTypeObject TcpViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._flowcore.TcpView",
    .tp_doc = "rec[R_TCP] of a Record: reads and writes the record's TCP part (T_* indexes)",
    .tp_basicsize = sizeof(TcpViewObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_SEQUENCE,
    .tp_dealloc = (destructor)tcpview_dealloc,
    .tp_as_sequence = &tcpview_as_sequence,
    .tp_as_mapping = &tcpview_as_mapping,
    .tp_repr = tcpview_repr,
    .tp_hash = PyObject_HashNotImplemented,
};

/* The direction of `key` on `rec`: 0 when it is the record's key (the flow's source sent it),
 * else 1 (the reverse key, a MAC-order alias); -1 with an exception. The table's dict maps
 * both keys to the record: what was (record, direction) is this. */
static int direction_on(RecordObject *rec, PyObject *key)
{
    if (key == rec->key) return 0;
    if (key == rec->rev_key && !rec->rev_same) return 1;
    if (rec->key == NULL) return 1;
    int same = PyObject_RichCompareBool(key, rec->key, Py_EQ);
    return same < 0 ? -1 : !same;
}

/* hash(rec's key `which`: 0 R_KEY, 1 R_REV_KEY), kept in the record; -1 with an exception */
static Py_hash_t key_hash(RecordObject *rec, int which)
{
    PyObject *key = which == 0 ? rec->key : rec->rev_key;
    if (rec->khash[which] == -1 && key != NULL) rec->khash[which] = PyObject_Hash(key);
    return rec->khash[which];
}

static inline unsigned u16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }

#include "_blake2b.h"     /* blake2b(), id_text(): flow.id */
#include "_cid.h"         /* community_id(): network.community_id */
#include "_isotime.h"     /* second_text(): event times */
#include "_iptext.h"      /* ip_text(): addresses */
#include "_direction.h"   /* direction_verdict(): network.direction from CIDR ranges */
#include "_flowapi.h"     /* account_raw, offered to beat/_speedups.c */

/* ---- text ------------------------------------------------------------------ */

/* A report is written straight into bytes: fixed ASCII, numbers written here, and the flow's
 * static parts kept as UTF-8 (make_parts). These write at `w` (room made by the caller) and
 * return the end. */
static inline char *put_mem(char *w, const void *s, Py_ssize_t n) { memcpy(w, s, (size_t)n); return w + n; }
/* A literal's bytes at w. Long ones (a report's event text, ~140 bytes) go 16 bytes a move:
 * gcc copies a long block of a constant size with `rep movsb`, whose start-up costs more than
 * the copy at that size (and valgrind counts it a step per byte). */
static inline char *put_lit(char *w, const char *s, size_t n)
{
    size_t i = 0;
    if (n > 64)
        for (; i + 16 <= n; i += 16) memcpy(w + i, s + i, 16);
    memcpy(w + i, s + i, n - i);
    return w + n;
}
#define PUT_LIT(w, lit) put_lit((w), (lit), sizeof(lit) - 1)
#define NUM_MAX 20      /* the longest decimal long long, sign included */
#define STAMP_MAX 40    /* the longest time text kept here (longer ones: the Python path) */

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* v in decimal, as Python's str(int): written from its last digit back, two per division */
static char *put_dec(char *w, long long v)
{
    static const unsigned long long tens[19] = {10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
        10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
        10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (v < 0) *w++ = '-';
    if (u < 10) {
        *w++ = (char)('0' + u);
        return w;
    }
    int len = 2;
    while (len < 20 && u >= tens[len - 1]) len++;
    char *end = w + len, *p = end;
    while (u >= 100) {
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, DIGIT_PAIRS + 2 * u, 2);
    } else {
        *--p = (char)('0' + u);
    }
    return end;
}

/* round((b - a) * 1e6) as Python computes it, for floats; 0 when out of the range kept exact. */
static inline int micros_between(double a, double b, long long *out)
{
    double r = nearbyint((b - a) * 1e6);
    if (!(fabs(r) < 9e15)) return 0;
    *out = (long long)r;
    return 1;
}

/* The UTF-8 of an exact str (its own ASCII data, else the cached UTF-8): 1; 0 without an
 * exception when it has none (a lone surrogate); -1 with an exception. */
static inline int utf8_of(PyObject *s, const char **p, Py_ssize_t *n)
{
    if (PyUnicode_IS_ASCII(s)) {
        *p = (const char *)PyUnicode_DATA(s);
        *n = PyUnicode_GET_LENGTH(s);
        return 1;
    }
    *p = PyUnicode_AsUTF8AndSize(s, n);
    if (*p != NULL) return 1;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
    PyErr_Clear();
    return 0;
}

/* decoders/api.py iso_time (RFC 3339 UTC with microseconds, 27 characters) for floats in
 * 0 <= ts < 8e9, the range the C iso_time of wirebeat._speedups writes too: 1 and the text
 * in out; 0 outside it (the caller asks the Python function, the reference). The last
 * second's date and time are kept in `cache` (reports of one sweep share their seconds). */
typedef struct { long long second, day; char text[19]; } second_cache_t;

static int iso_c(double ts, char *out, second_cache_t *cache)
{
    if (!(ts >= 0.0 && ts < 8e9)) return 0;
    double secf = floor(ts);
    long long s = (long long)secf;
    long long micros = (long long)nearbyint((ts - secf) * 1e6);     /* round((ts - int(ts // 1)) * 1e6) */
    if (micros >= 1000000) { s += 1; micros -= 1000000; }
    if (s != cache->second) {
        if (s / 86400 == cache->day) {      /* the same date: the time of day only */
            int rem = (int)(s % 86400), hh = rem / 3600, mm = rem / 60 % 60, ss = rem % 60;
            char *t = cache->text;
            t[11] = (char)('0' + hh / 10); t[12] = (char)('0' + hh % 10);
            t[14] = (char)('0' + mm / 10); t[15] = (char)('0' + mm % 10);
            t[17] = (char)('0' + ss / 10); t[18] = (char)('0' + ss % 10);
        } else {
            second_text(s, cache->text);
            cache->day = s / 86400;
        }
        cache->second = s;
    }
    memcpy(out, cache->text, 19);
    out[19] = '.';
    for (int i = 25; i >= 20; i--) { out[i] = (char)('0' + micros % 10); micros /= 10; }
    out[26] = 'Z';
    return 1;
}

/* ---- Reporter: FlowReporter.report ------------------------------------------ */

/* A growing bytes object written in place and handed over as it is (its size set to its
 * length): no copy. Its size is bounded by the block's caps plus one report; `hint`, the
 * largest block's size so far and an eighth, sizes the next one so it rarely grows (a sweep's
 * last, short block would otherwise make the next sweep's first one grow, copying, from small).
 * A block handed over stays in `spare` (at most MAX_SPARE_BLOCKS, with its allocation's size)
 * until the output has let go of it (only `spare` refers to it): the next block is written into
 * it instead of fresh memory. Fresh blocks of a megabyte came from the kernel as zeroed pages
 * each time (glibc hands large freed blocks back): ~15,000 more page faults with flows on per
 * 300,000 packets of the 1M realistic capture. */
#define MAX_SPARE_BLOCKS 2
typedef struct {
    PyObject *obj;
    Py_ssize_t len, cap, hint;
    PyObject *spare[MAX_SPARE_BLOCKS];
    Py_ssize_t spare_cap[MAX_SPARE_BLOCKS];
} buf_t;

/* A spare block nobody else holds, at least `want` bytes, as buf's object (size: its capacity);
 * 1, or 0 when none. A spare too small for `want` is let go of. */
static int buf_reuse(buf_t *b, Py_ssize_t want)
{
    for (int i = 0; i < MAX_SPARE_BLOCKS; i++) {
        PyObject *o = b->spare[i];
        if (o == NULL || Py_REFCNT(o) != 1) continue;     /* still the output's */
        if (b->spare_cap[i] < want) {
            Py_CLEAR(b->spare[i]);
            continue;
        }
        /* Only this reference is left: the bytes object is ours to write again, as
         * _PyBytes_Resize does with a bytes object it alone holds. */
        b->spare[i] = NULL;
        Py_SET_SIZE(o, b->spare_cap[i]);
        /* Its cached hash (if one was taken) is of the old text. ob_shash is deprecated as a
         * public member since 3.11 but still the field _PyBytes_Resize resets the same way. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        ((PyBytesObject *)o)->ob_shash = -1;
#pragma GCC diagnostic pop
        b->obj = o;
        b->cap = b->spare_cap[i];
        return 1;
    }
    return 0;
}

static int buf_reserve(buf_t *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap * 2 : (b->hint > 65536 ? b->hint : 65536);
    while (cap < b->len + more) cap *= 2;
    if (b->obj == NULL) {
        if (buf_reuse(b, cap)) return 0;
        b->obj = PyBytes_FromStringAndSize(NULL, cap);
        if (b->obj == NULL) return -1;
    } else if (_PyBytes_Resize(&b->obj, cap) < 0) {     /* frees it on failure */
        b->len = b->cap = 0;
        return -1;
    }
    b->cap = cap;
    return 0;
}

/* The bytes written so far (a new reference); the buffer starts over empty. */
static PyObject *buf_take(buf_t *b)
{
    PyObject *out = b->obj;
    Py_ssize_t len = b->len, cap = b->cap;
    b->obj = NULL;
    b->len = b->cap = 0;
    if (out == NULL) return PyBytes_FromStringAndSize(NULL, 0);
    if (len + len / 8 > b->hint) b->hint = len + len / 8;     /* the largest block so far sizes the next */
    for (int i = 0; i < MAX_SPARE_BLOCKS; i++) {
        if (b->spare[i] != NULL && Py_REFCNT(b->spare[i]) != 1) continue;
        /* kept whole for the next block: the size says `len`, the allocation keeps `cap` */
        Py_XSETREF(b->spare[i], Py_NewRef(out));
        b->spare_cap[i] = cap;
        Py_SET_SIZE(out, len);
        PyBytes_AS_STRING(out)[len] = '\0';
        return out;
    }
    if (_PyBytes_Resize(&out, len) < 0) return NULL;
    return out;
}

static void buf_free(buf_t *b)
{
    Py_CLEAR(b->obj);
    for (int i = 0; i < MAX_SPARE_BLOCKS; i++) Py_CLEAR(b->spare[i]);
    b->len = b->cap = 0;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *reporter, *report_python, *assign_id, *iso_time, *fragment;
    PyObject *community_id, *transports, *tail, *id_source;
    double stamp_ts;            /* the last report time not a flow's last packet, and its text */
    char stamp_text[STAMP_MAX];
    int stamp_n;                /* 0: none kept */
    second_cache_t seconds;     /* iso_c's last second */
    PyObject *id_key, *id_bytes;    /* the last source and its id_source(source) as UTF-8 */
    PyObject *tail_key, *tail_bytes; /* the last source and its tail(source) as UTF-8 (fixed per source) */
    PyObject *dir_obj, *dir_kinds, *dir_tests;     /* builder.direction and its kinds dict and tests list */
    PyObject *dir_ranges;       /* its packed_ranges (a tuple when every range is a CIDR), else NULL */
    PyObject *pending;          /* while collecting: the reports made, [(doc_id, Fragment)]; else NULL */
    /* Blocks (see blocks()): while collecting, text reports are appended to `data` as NDJSON
     * lines and their _ids to `ids` (one a line) instead of becoming Python objects; handed to
     * publish_block(data, ids, count) when `block_docs` or `block_bytes` is reached, before a
     * report the Python method makes, and when collecting stops. */
    PyObject *publish_block;    /* NULL: blocks off */
    Py_ssize_t block_docs, block_bytes, nblock;
    buf_t data, ids;
    Py_ssize_t max_flows;       /* reporter.max_flows (a read-only property: read once, when made) */
} ReporterObject;

#define MAX_COLLECTED 1024     /* reports a sweep holds before handing them over */

/* The collected reports go to the pipeline: `publish_many(list)` with the reporter's
 * publish_many, else `publish(doc_id, doc)` for each. Collecting goes on (a new list). */
static int hand_over_block(ReporterObject *self)
{
    if (self->nblock == 0) return 0;
    PyObject *data = buf_take(&self->data), *ids = buf_take(&self->ids);
    PyObject *count = PyLong_FromSsize_t(self->nblock);
    self->nblock = 0;
    PyObject *res = NULL;
    if (data != NULL && ids != NULL && count != NULL) {
        PyObject *args[3] = {data, ids, count};
        res = PyObject_Vectorcall(self->publish_block, args, 3, NULL);
    }
    Py_XDECREF(data);
    Py_XDECREF(ids);
    Py_XDECREF(count);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

static int publish_pending(ReporterObject *self)
{
    if (hand_over_block(self) < 0) return -1;
    if (self->pending == NULL || PyList_GET_SIZE(self->pending) == 0) return 0;
    PyObject *docs = self->pending, *fresh = PyList_New(0), *many, *res;
    if (fresh == NULL) return -1;
    self->pending = fresh;
    many = PyObject_GetAttr(self->reporter, str_publish_many);
    if (many == NULL) { Py_DECREF(docs); return -1; }
    if (many != Py_None) {
        res = PyObject_CallOneArg(many, docs);
        Py_DECREF(many);
        Py_DECREF(docs);
        if (res == NULL) return -1;
        Py_DECREF(res);
        return 0;
    }
    Py_DECREF(many);
    PyObject *publish = PyObject_GetAttr(self->reporter, str_publish);
    if (publish == NULL) { Py_DECREF(docs); return -1; }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(docs); i++) {
        PyObject *item = PyList_GET_ITEM(docs, i);
        res = PyObject_Vectorcall(publish, &PyTuple_GET_ITEM(item, 0), 2, NULL);
        if (res == NULL) { rc = -1; break; }
        Py_DECREF(res);
    }
    Py_DECREF(publish);
    Py_DECREF(docs);
    return rc;
}

/* Start collecting reports (a sweep, the end of input); 0 or -1. Already collecting: 0. */
static int start_collecting(ReporterObject *self)
{
    if (self->pending != NULL) return 0;
    self->pending = PyList_New(0);
    return self->pending == NULL ? -1 : 0;
}

/* Publish what was collected and stop collecting; keeps an exception already set. */
static int stop_collecting(ReporterObject *self)
{
    if (self->pending == NULL) return 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = publish_pending(self);
    Py_CLEAR(self->pending);
    if (type != NULL) {
        if (rc < 0) PyErr_Clear();      /* the first error is the one to tell */
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return rc;
}

static PyObject *call_report_python(ReporterObject *self, PyObject *source, PyObject *rec, PyObject *final,
                                    PyObject *reason, PyObject *report_ts)
{
    /* The Python method publishes itself: what was collected goes first (the same order). */
    if (publish_pending(self) < 0) return NULL;
    PyObject *args[6] = {self->reporter, source, rec, final, reason, report_ts};
    return PyObject_Vectorcall(self->report_python, args, 6, NULL);
}

/* _assign_id in C: flow.id of the record (also stored in it), a new reference; NULL
 * without an error when the record is not the common case (the caller asks Python). */
static PyObject *assign_id_c(ReporterObject *self, PyObject *source, RecordObject *rec)
{
    PyObject *key = rec->key;
    if (key == NULL || !PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 8 || !PyUnicode_CheckExact(source))
        return NULL;
    PyObject *macs = PyTuple_GET_ITEM(key, 0), *vlans = PyTuple_GET_ITEM(key, 1), *outer = PyTuple_GET_ITEM(key, 2),
             *src = PyTuple_GET_ITEM(key, 3), *dst = PyTuple_GET_ITEM(key, 4);
    long long proto, sport, dport, vl[8];
    Py_ssize_t nvlans, nouter;
    if (!PyBytes_CheckExact(macs) || !PyTuple_CheckExact(vlans) || (nvlans = PyTuple_GET_SIZE(vlans)) > 8
            || !PyTuple_CheckExact(outer) || ((nouter = PyTuple_GET_SIZE(outer)) != 0 && nouter != 2)
            || !PyBytes_CheckExact(src) || !PyBytes_CheckExact(dst)
            || !get_ll(PyTuple_GET_ITEM(key, 5), &proto) || proto < 0 || proto > 255
            || !get_ll(PyTuple_GET_ITEM(key, 6), &sport) || sport < 0 || sport > 65535
            || !get_ll(PyTuple_GET_ITEM(key, 7), &dport) || dport < 0 || dport > 65535)
        return NULL;
    for (Py_ssize_t i = 0; i < nouter; i++) {
        PyObject *o = PyTuple_GET_ITEM(outer, i);
        if (!PyBytes_CheckExact(o) || PyBytes_GET_SIZE(o) > 255) return NULL;
    }
    for (Py_ssize_t i = 0; i < nvlans; i++)
        if (!get_ll(PyTuple_GET_ITEM(vlans, i), &vl[i])) return NULL;
    double start = nearbyint(rec->ts[0] * 1e6);     /* round(rec[R_FIRST_TS] * 1e6) */
    if (!(fabs(start) < 9e18)) return NULL;
    long long micros = (long long)start;
    if (source != self->id_key) {       /* id_source(source).encode(), kept for the next flow */
        PyObject *text = PyObject_CallOneArg(self->id_source, source);
        if (text == NULL) return NULL;
        PyObject *raw = PyUnicode_CheckExact(text) ? PyUnicode_AsUTF8String(text) : NULL;
        Py_DECREF(text);
        if (raw == NULL) { PyErr_Clear(); return NULL; }      /* Python decides (and tells) */
        Py_XSETREF(self->id_bytes, raw);
        Py_XSETREF(self->id_key, Py_NewRef(source));
    }
    /* b"|".join((source, macs, bytes(map(len, outer)), *outer, src, dst, numbers, vlans text)) */
    Py_ssize_t size = PyBytes_GET_SIZE(self->id_bytes) + PyBytes_GET_SIZE(macs) + nouter + PyBytes_GET_SIZE(src)
                      + PyBytes_GET_SIZE(dst) + 13 + nvlans * 21 + 8;
    for (Py_ssize_t i = 0; i < nouter; i++) size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(outer, i)) + 1;
    unsigned char stackbuf[512], *buf = size <= (Py_ssize_t)sizeof stackbuf ? stackbuf : PyMem_Malloc(size);
    if (buf == NULL) { PyErr_NoMemory(); return NULL; }
    unsigned char *w = buf;
#define PUT(o) do { memcpy(w, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o)); w += PyBytes_GET_SIZE(o); *w++ = '|'; } while (0)
    PUT(self->id_bytes);
    PUT(macs);
    for (Py_ssize_t i = 0; i < nouter; i++) *w++ = (unsigned char)PyBytes_GET_SIZE(PyTuple_GET_ITEM(outer, i));
    *w++ = '|';
    for (Py_ssize_t i = 0; i < nouter; i++) PUT(PyTuple_GET_ITEM(outer, i));
    PUT(src);
    PUT(dst);
#undef PUT
    *w++ = (unsigned char)proto;            /* struct "!BHHq" */
    *w++ = (unsigned char)(sport >> 8); *w++ = (unsigned char)sport;
    *w++ = (unsigned char)(dport >> 8); *w++ = (unsigned char)dport;
    uint64_t um = (uint64_t)micros;
    for (int i = 7; i >= 0; i--) *w++ = (unsigned char)(um >> (8 * i));
    *w++ = '|';
    for (Py_ssize_t i = 0; i < nvlans; i++) {
        if (i) *w++ = ',';
        w += sprintf((char *)w, "%lld", vl[i]);
    }
    uint8_t digest[15];
    char idt[20];
    blake2b(buf, (size_t)(w - buf), digest, 15);
    if (buf != stackbuf) PyMem_Free(buf);
    id_text(digest, idt);
    PyObject *fid = PyUnicode_FromStringAndSize(idt, 20);
    if (fid != NULL) Py_XSETREF(rec->id, Py_NewRef(fid));
    return fid;
}

/* flow.id of the record: its own, else assigned (in C, else by the Python _assign_id). */
static PyObject *flow_id(ReporterObject *self, PyObject *source, RecordObject *rec)
{
    PyObject *fid = rec->id;
    if (fid != NULL && PyUnicode_CheckExact(fid) && PyUnicode_GET_LENGTH(fid)) return Py_NewRef(fid);
    fid = assign_id_c(self, source, rec);
    if (fid != NULL || PyErr_Occurred()) return fid;
    PyObject *args[2] = {source, (PyObject *)rec};
    return PyObject_Vectorcall(self->assign_id, args, 2, NULL);
}

/* R_TEXT as this file keeps it: one bytes object, PARTS 4-byte lengths (native order) and the
 * parts after them, as UTF-8: the six of `_text_parts` but for the source's tail (the same for
 * all its flows: written from tail_of), then flow.id's text (each report's _id: read here, not
 * from the id object, another miss to memory per report of a quiet flow; setting R_ID lets go
 * of R_TEXT). FlowReporter (Python) keeps a tuple of six str there; each side rebuilds what it
 * does not recognise (only caches: the reports are the same). */
#define PARTS 7
#define PARTS_HEAD ((Py_ssize_t)(PARTS * sizeof(uint32_t)))

static int parts_of(PyObject *parts, const char *p[PARTS], Py_ssize_t n[PARTS])
{
    if (!PyBytes_CheckExact(parts) || PyBytes_GET_SIZE(parts) < PARTS_HEAD) return 0;
    const char *base = PyBytes_AS_STRING(parts);
    Py_ssize_t at = PARTS_HEAD, size = PyBytes_GET_SIZE(parts);
    for (int i = 0; i < PARTS; i++) {
        uint32_t len;
        memcpy(&len, base + i * sizeof len, sizeof len);
        if ((Py_ssize_t)len > size - at) return 0;
        p[i] = base + at;
        n[i] = (Py_ssize_t)len;
        at += (Py_ssize_t)len;
    }
    return at == size;
}

/* iso_time(ts) of a float as UTF-8 into out (room for STAMP_MAX): its length; 0 when the
 * Python function (outside iso_c's range) gives no such text (the caller takes the Python
 * path); -1 with an exception. */
static int iso_text(ReporterObject *self, double ts, char *out)
{
    if (iso_c(ts, out, &self->seconds)) return 27;
    PyObject *tso = PyFloat_FromDouble(ts);
    if (tso == NULL) return -1;
    PyObject *text = PyObject_CallOneArg(self->iso_time, tso);
    Py_DECREF(tso);
    if (text == NULL) return -1;
    const char *p;
    Py_ssize_t n;
    int r = 0;
    if (PyUnicode_CheckExact(text) && (r = utf8_of(text, &p, &n)) > 0) {
        if (n > 0 && n <= STAMP_MAX) {
            memcpy(out, p, (size_t)n);
            r = (int)n;
        } else {
            r = 0;
        }
    }
    Py_DECREF(text);
    return r;
}

/* An address as inet_ntop writes it (wirebeat.ip.ip_text is socket.inet_ntop, the same libc
 * function): its length. */
static Py_ssize_t ip_chars(PyObject *packed, char *out)
{
    return ip_text(out, (const unsigned char *)PyBytes_AS_STRING(packed), (int)PyBytes_GET_SIZE(packed)) - out;
}

static const char HEXU[] = "0123456789ABCDEF";

/* format_mac of 6 bytes: "02-00-00-00-00-0A", 17 characters */
static char *put_mac(char *w, const unsigned char *m)
{
    for (int i = 0; i < 6; i++) {
        if (i) *w++ = '-';
        *w++ = HEXU[m[i] >> 4];
        *w++ = HEXU[m[i] & 15];
    }
    return w;
}

/* NetworkDirection._verdict's words (DIRECTION_WORDS, beat/_direction.h) as str. */
static PyObject *verdicts[DIRECTION_N], *str__kind;
enum { K_HOST = 1, K_INTERNAL = 2, K_INVALID = 4 };     /* direction.py's _HOST, _INTERNAL, _INVALID */

/* network.direction of a flow's packed addresses (a new reference): NetworkDirection.of_packed's
 * answer. With CIDR ranges only (packed_ranges), worked out here from them, as _doctext does for
 * transactions (no cache: a flow asks once, at its first report, and the Python _kind of an
 * address not cached yet cost ~7,000 instructions). Else the addresses' kinds from its `kinds`
 * cache (an address not in it from its _kind method, which classifies and caches it) and the
 * verdict as _verdict gives it; a direction object of another shape answers itself. */
static PyObject *direction_of(ReporterObject *self, PyObject *direction, PyObject *src, PyObject *dst)
{
    if (direction != self->dir_obj) {       /* kinds, tests, packed_ranges stay the same objects for its life */
        PyObject *kinds = PyObject_GetAttrString(direction, "kinds");
        PyObject *tests = kinds ? PyObject_GetAttrString(direction, "tests") : NULL;
        if (tests == NULL) PyErr_Clear();
        Py_XSETREF(self->dir_kinds, tests ? kinds : NULL);
        if (tests == NULL) Py_XDECREF(kinds);
        Py_XSETREF(self->dir_tests, tests);
        PyObject *ranges = PyObject_GetAttrString(direction, "packed_ranges");
        if (ranges == NULL) PyErr_Clear();
        else if (!PyTuple_CheckExact(ranges)) Py_CLEAR(ranges);
        Py_XSETREF(self->dir_ranges, ranges);
        Py_XSETREF(self->dir_obj, Py_NewRef(direction));
    }
    if (self->dir_ranges != NULL && PyBytes_CheckExact(src) && PyBytes_CheckExact(dst)
            && PyBytes_GET_SIZE(src) == PyBytes_GET_SIZE(dst)) {
        int v = direction_verdict(self->dir_ranges, (const unsigned char *)PyBytes_AS_STRING(src),
                                  (const unsigned char *)PyBytes_AS_STRING(dst), (int)PyBytes_GET_SIZE(src));
        if (v >= 0) return Py_NewRef(verdicts[v]);
    }
    if (self->dir_kinds != NULL && PyDict_CheckExact(self->dir_kinds) && PyList_CheckExact(self->dir_tests)) {
        /* of_packed is _verdict(_kind(src), _kind(dst)): an address not cached yet is
         * classified (and cached) by the _kind method, source first */
        PyObject *addr[2] = {src, dst};
        long long kind[2];
        int known = 1;
        for (int i = 0; i < 2 && known; i++) {
            PyObject *k = PyDict_GetItemWithError(self->dir_kinds, addr[i]);
            if (k != NULL) {
                known = get_ll(k, &kind[i]);
                continue;
            }
            if (PyErr_Occurred()) return NULL;
            PyObject *args[2] = {direction, addr[i]};
            k = PyObject_VectorcallMethod(str__kind, args, 2, NULL);
            if (k == NULL) return NULL;
            known = get_ll(k, &kind[i]);
            Py_DECREF(k);
        }
        if (known) {
            long long s = kind[0], d = kind[1];
            int v = (s | d) & K_INVALID ? DIRECTION_UNKNOWN : d & K_HOST ? DIRECTION_INGRESS
                    : s & K_HOST ? DIRECTION_EGRESS : PyList_GET_SIZE(self->dir_tests) == 0 ? DIRECTION_UNKNOWN
                    : s & K_INTERNAL ? (d & K_INTERNAL ? DIRECTION_INTERNAL : DIRECTION_OUTBOUND)
                    : (d & K_INTERNAL ? DIRECTION_INBOUND : DIRECTION_EXTERNAL);
            return Py_NewRef(verdicts[v]);
        }
    }
    PyObject *args[3] = {direction, src, dst};
    return PyObject_VectorcallMethod(str_of_packed, args, 3, NULL);
}

/* The source's tail (FlowReporter._tail: capture, agent, ecs, fields, tags and the closing
 * brace) as UTF-8 in self->tail_bytes, kept for the source's next report: 1; 0 when it is no
 * text or has no UTF-8 (the caller takes the Python path); -1 with an exception. */
static int tail_of(ReporterObject *self, PyObject *source)
{
    if (source == self->tail_key) return 1;
    PyObject *tail = PyObject_CallOneArg(self->tail, source);
    if (tail == NULL) return -1;
    const char *p;
    Py_ssize_t n;
    int r = PyUnicode_CheckExact(tail) ? utf8_of(tail, &p, &n) : 0;
    PyObject *raw = r > 0 ? PyBytes_FromStringAndSize(p, n) : NULL;
    Py_DECREF(tail);
    if (r <= 0) return r;
    if (raw == NULL) return -1;
    Py_XSETREF(self->tail_bytes, raw);
    Py_XSETREF(self->tail_key, Py_NewRef(source));
    return 1;
}

/* `_text_parts` (the flow's text that never changes) as R_TEXT keeps it here (see parts_of),
 * a new bytes object; NULL without an error when the flow is not the common case (the caller
 * then takes the Python path), NULL with one on failure. */
static PyObject *make_parts(ReporterObject *self, PyObject *source, RecordObject *rec, PyObject *fid)
{
    PyObject *key = rec->key;
    if (key == NULL || !PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 8) return NULL;
    PyObject *macs = PyTuple_GET_ITEM(key, 0), *vlans = PyTuple_GET_ITEM(key, 1), *outer = PyTuple_GET_ITEM(key, 2),
             *src = PyTuple_GET_ITEM(key, 3), *dst = PyTuple_GET_ITEM(key, 4), *proto_o = PyTuple_GET_ITEM(key, 5),
             *icmp = rec->icmp ? rec->icmp : Py_None;
    long long proto, sport = 0, dport = 0, vl[8];
    Py_ssize_t nvlans, nouter;
    if (!PyBytes_CheckExact(macs) || (PyBytes_GET_SIZE(macs) != 0 && PyBytes_GET_SIZE(macs) != 12)
            || !PyTuple_CheckExact(vlans) || (nvlans = PyTuple_GET_SIZE(vlans)) > 8
            || !PyTuple_CheckExact(outer) || ((nouter = PyTuple_GET_SIZE(outer)) != 0 && nouter != 2)
            || !PyBytes_CheckExact(src) || !PyBytes_CheckExact(dst) || PyBytes_GET_SIZE(src) != PyBytes_GET_SIZE(dst)
            || (PyBytes_GET_SIZE(src) != 4 && PyBytes_GET_SIZE(src) != 16) || !get_ll(proto_o, &proto)
            || !PyUnicode_CheckExact(source))
        return NULL;
    for (Py_ssize_t i = 0; i < nouter; i++) {
        PyObject *o = PyTuple_GET_ITEM(outer, i);
        if (!PyBytes_CheckExact(o) || (PyBytes_GET_SIZE(o) != 4 && PyBytes_GET_SIZE(o) != 16)) return NULL;
    }
    for (Py_ssize_t i = 0; i < nvlans; i++)
        if (!get_ll(PyTuple_GET_ITEM(vlans, i), &vl[i])) return NULL;
    if (proto == 6 || proto == 17) {
        if (!get_ll(PyTuple_GET_ITEM(key, 6), &sport) || !get_ll(PyTuple_GET_ITEM(key, 7), &dport)) return NULL;
    } else if (icmp != Py_None) {
        if (!PyTuple_CheckExact(icmp) || PyTuple_GET_SIZE(icmp) != 2 || !get_ll(PyTuple_GET_ITEM(icmp, 0), &sport)
                || !get_ll(PyTuple_GET_ITEM(icmp, 1), &dport))
            return NULL;
    }
    /* addresses as text: source, destination, then the tunnel's outer source and destination */
    char ip[4][INET6_ADDRSTRLEN], start[STAMP_MAX];
    Py_ssize_t ipn[4];
    PyObject *packed[4] = {src, dst, nouter ? PyTuple_GET_ITEM(outer, 0) : NULL, nouter ? PyTuple_GET_ITEM(outer, 1) : NULL};
    for (int i = 0; i < (nouter ? 4 : 2); i++)
        if (!(ipn[i] = ip_chars(packed[i], ip[i]))) return NULL;
    int start_n = iso_text(self, rec->ts[0], start);
    if (start_n <= 0) return NULL;      /* (an exception stays set) */

    enum { O_CID, O_TRANSPORT, O_DIRECTION, O_N };
    PyObject *objs[O_N] = {NULL}, *out = NULL;
    char cid[30];
    int cid_c = 0;      /* 1: cid holds the id, computed here (_cid.h) as community_id_packed does;
                         * values out of its range go to that function */
    if (proto == 6 || proto == 17 || icmp != Py_None) {
        if (sport >= 0 && sport <= 65535 && dport >= 0 && dport <= 65535 && proto >= 0 && proto <= 255) {
            community_id((int)proto, (const unsigned char *)PyBytes_AS_STRING(src),
                         (const unsigned char *)PyBytes_AS_STRING(dst), (int)PyBytes_GET_SIZE(src), (int)sport,
                         (int)dport, cid);
            cid_c = 1;
        } else {
            PyObject *sp = PyLong_FromLongLong(sport), *dp = PyLong_FromLongLong(dport);
            if (sp && dp) {
                PyObject *args[5] = {proto_o, src, sp, dst, dp};
                objs[O_CID] = PyObject_Vectorcall(self->community_id, args, 5, NULL);
            }
            Py_XDECREF(sp);
            Py_XDECREF(dp);
            if (objs[O_CID] == NULL) goto done;
            if (objs[O_CID] == Py_None) Py_CLEAR(objs[O_CID]);
        }
    }
    objs[O_TRANSPORT] = PyDict_GetItemWithError(self->transports, proto_o);
    if (objs[O_TRANSPORT] != NULL) Py_INCREF(objs[O_TRANSPORT]);
    else if (PyErr_Occurred() || !(objs[O_TRANSPORT] = PyObject_Str(proto_o))) goto done;
    PyObject *builder = PyObject_GetAttr(self->reporter, str_builder);
    if (builder == NULL) goto done;
    PyObject *direction = PyObject_GetAttr(builder, str_direction);
    Py_DECREF(builder);
    if (direction == NULL) goto done;
    if (direction != Py_None) {
        objs[O_DIRECTION] = direction_of(self, direction, src, dst);
        if (objs[O_DIRECTION] == NULL) { Py_DECREF(direction); goto done; }
    }
    Py_DECREF(direction);
    const char *tp[4];      /* fid, cid, transport, direction as UTF-8 */
    Py_ssize_t tn[4] = {0, 0, 0, 0};
    PyObject *texts[4] = {fid, objs[O_CID], objs[O_TRANSPORT], objs[O_DIRECTION]};
    for (int i = 0; i < 4; i++) {
        if (texts[i] == NULL) continue;
        int r = PyUnicode_CheckExact(texts[i]) ? utf8_of(texts[i], &tp[i], &tn[i]) : 0;
        if (r <= 0) goto done;          /* -1: the exception stays; 0: Python decides */
    }
    if (cid_c) {
        tp[1] = cid;
        tn[1] = sizeof cid;
    }
    Py_ssize_t bound = PARTS_HEAD + 400 + start_n + 2 * tn[0] + tn[1] + tn[2] + tn[3] + 4 * INET6_ADDRSTRLEN
                       + 10 * NUM_MAX;
    /* written on the stack, then copied once into a bytes object of the exact size (a bytes
     * object of `bound` shrunk by _PyBytes_Resize cost ~550 instructions more a flow) */
    char stackbuf[1536], *heap = NULL;
    char *base = bound <= (Py_ssize_t)sizeof stackbuf ? stackbuf : (heap = PyMem_Malloc((size_t)bound));
    if (base == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    char *w = base + PARTS_HEAD, *at[PARTS + 1];
    const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(macs);
    at[0] = w;
    w = put_mem(w, start, start_n);
    w = PUT_LIT(w, "\",\"end\":\"");
    at[1] = w;
    w = PUT_LIT(w, "},\"flow\":{\"id\":\"");
    w = put_mem(w, tp[0], tn[0]);
    w = PUT_LIT(w, "\",");
    if (nvlans) {
        w = PUT_LIT(w, "\"vlan\":[");
        for (Py_ssize_t i = 0; i < nvlans; i++) {
            if (i) *w++ = ',';
            w = put_dec(w, vl[i]);
        }
        w = PUT_LIT(w, "],");
    }
    w = PUT_LIT(w, "\"final\":");
    for (int side = 0; side < 2; side++) {     /* source, then destination */
        at[2 + side] = w;
        w = side == 0 ? PUT_LIT(w, "},\"source\":{") : PUT_LIT(w, "},\"destination\":{");
        if (PyBytes_GET_SIZE(macs)) {
            w = PUT_LIT(w, "\"mac\":\"");
            w = put_mac(w, m + (side == 0 ? 6 : 0));    /* the source's MAC is the frame's second address */
            w = PUT_LIT(w, "\",");
        }
        if (nouter) {
            w = PUT_LIT(w, "\"ip\":[\"");
            w = put_mem(w, ip[2 + side], ipn[2 + side]);
            w = PUT_LIT(w, "\",\"");
            w = put_mem(w, ip[side], ipn[side]);
            w = PUT_LIT(w, "\"],");
        } else {
            w = PUT_LIT(w, "\"ip\":\"");
            w = put_mem(w, ip[side], ipn[side]);
            w = PUT_LIT(w, "\",");
        }
        if (proto == 6 || proto == 17) {
            w = PUT_LIT(w, "\"port\":");
            w = put_dec(w, side == 0 ? sport : dport);
            *w++ = ',';
        }
        w = PUT_LIT(w, "\"packets\":");
    }
    at[4] = w;
    w = PUT_LIT(w, "},\"network\":{\"type\":\"");
    w = PyBytes_GET_SIZE(src) == 16 ? PUT_LIT(w, "ipv6") : PUT_LIT(w, "ipv4");
    w = PUT_LIT(w, "\",\"transport\":\"");
    w = put_mem(w, tp[2], tn[2]);
    w = PUT_LIT(w, "\",");
    if (tn[1]) {
        w = PUT_LIT(w, "\"community_id\":\"");
        w = put_mem(w, tp[1], tn[1]);
        w = PUT_LIT(w, "\",");
    }
    w = PUT_LIT(w, "\"bytes\":");
    at[5] = w;
    if (objs[O_DIRECTION] != NULL) {
        w = PUT_LIT(w, ",\"direction\":\"");
        w = put_mem(w, tp[3], tn[3]);
        *w++ = '"';
    }
    *w++ = '}';             /* (the source's tail follows it in a report: tail_of) */
    at[6] = w;
    w = put_mem(w, tp[0], tn[0]);       /* flow.id, for the _id */
    at[7] = w;
    for (int i = 0; i < PARTS; i++) {
        uint32_t len = (uint32_t)(at[i + 1] - at[i]);
        memcpy(base + i * sizeof len, &len, sizeof len);
    }
    out = PyBytes_FromStringAndSize(base, w - base);
    PyMem_Free(heap);
done:
    for (int i = 0; i < O_N; i++) Py_XDECREF(objs[i]);
    return out;
}

/* reporter.as_text: 1, 0, or -1 with an exception set. */
static int as_text_of(ReporterObject *self)
{
    PyObject *flag = PyObject_GetAttr(self->reporter, str_as_text);
    if (flag == NULL) return -1;
    int as_text = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    return as_text;
}

#define EVENT_HEAD "\",\"type\":\"flow\",\"event\":{\"kind\":\"event\",\"category\":[\"network\"]," \
                   "\"action\":\"network_flow\",\"dataset\":\"flow\",\"type\":[\"connection\""
#define LINE_FIXED 512      /* room for a report's fixed text (the numbers' is NUM_MAX each) */

/* One report (`as_text`: reporter.as_text, read by the caller); 0, or -1 with an exception set.
 * The text is what FlowReporter.report joins, written here from the record's numbers and its
 * cached static parts (make_parts): into the block being filled (see blocks()), else into a
 * bytes object published as an orjson.Fragment. Whatever is not the common case goes to the
 * Python method before anything but the caches (flow.id, R_TEXT) changed. */
static int report(ReporterObject *self, int as_text, PyObject *source, PyObject *reco, int final, PyObject *reason,
                  PyObject *report_ts)
{
    RecordObject *rec = (RecordObject *)reco;
    PyObject *res, *fid = NULL, *parts = NULL, *tail = NULL, *line = NULL, *doc_id = NULL, *frag = NULL;
    long long reports, n[4], duration, tcpn[5] = {0}, rttv[3] = {0};
    int rtt = 0, rc = -1, r = 1;
    const char *fid_p, *reason_p = NULL, *pp[PARTS];
    Py_ssize_t fid_n, reason_n = 0, pn[PARTS];

    if (!as_text || !IS_RECORD(reco) || !PyFloat_CheckExact(report_ts)
            || !(reason == Py_None || PyUnicode_CheckExact(reason)))
        goto python;
    parts = rec->text;
    if (parts != NULL && parts_of(parts, pp, pn)) {     /* flow.id's text with them (PARTS) */
        Py_INCREF(parts);
        fid_p = pp[PARTS - 1];
        fid_n = pn[PARTS - 1];
    } else {                                            /* made below, once the numbers pass */
        parts = NULL;
        fid = flow_id(self, source, rec);
        if (fid == NULL) return -1;
        r = PyUnicode_CheckExact(fid) ? utf8_of(fid, &fid_p, &fid_n) : 0;
        if (r < 0) goto error;
    }
    reports = rec->reports;
    if (r == 0 || reports < 0 || reports == LLONG_MAX) goto python_fid;
    for (int i = 0; i < 4; i++)
        if ((n[i] = rec->n[i]) < 0) goto python_fid;
    if (n[0] > LLONG_MAX - n[1] || n[2] > LLONG_MAX - n[3]) goto python_fid;
    double last = rec->ts[1];
    int has_tcp = rec->has_tcp;
    if (!micros_between(rec->ts[0], last, &duration)) goto python_fid;
    if (has_tcp) {
        static const int which[5] = {T_SYN, T_FIN, T_RST, T_RETRANS, T_RETRANS_REV};
        for (int i = 0; i < 5; i++) tcpn[i] = TCP_SLOT(rec, which[i]).i;
        unsigned none = rec->t_none;
        double syn = TCP_SLOT(rec, T_SYN_TS).f, synack = TCP_SLOT(rec, T_SYNACK_TS).f, ack = TCP_SLOT(rec, T_ACK_TS).f;
        if (!(none & (1 << T_SYN_TS)) && !(none & (1 << T_SYNACK_TS))) {
            if (!micros_between(syn, synack, &rttv[0])) goto python_fid;
            rtt = 1;
            if (!(none & (1 << T_ACK_TS))) {
                if (!micros_between(synack, ack, &rttv[1]) || !micros_between(syn, ack, &rttv[2])) goto python_fid;
                rtt = 2;
            }
        }
    }
    if (final && reason != Py_None && PyUnicode_GET_LENGTH(reason)) {      /* `if reason` */
        r = utf8_of(reason, &reason_p, &reason_n);
        if (r < 0) goto error;
        if (r == 0) goto python_fid;
    }
    if (parts == NULL) {
        parts = make_parts(self, source, rec, fid);
        if (parts == NULL) {
            if (PyErr_Occurred()) goto error;
            goto python_fid;
        }
        Py_XSETREF(rec->text, Py_NewRef(parts));
        parts_of(parts, pp, pn);
    }
    r = tail_of(self, source);
    if (r < 0) goto error;
    if (r == 0) goto python_fid;
    tail = Py_NewRef(self->tail_bytes);     /* (held: iso_text may run Python code) */
    Py_ssize_t tail_n = PyBytes_GET_SIZE(tail);
    char end[STAMP_MAX];
    const char *stamp;
    int end_n = iso_text(self, last, end), stamp_n;
    if (end_n < 0) goto error;
    if (end_n == 0) goto python_fid;
    double ts = PyFloat_AS_DOUBLE(report_ts);
    if (last == ts) {
        stamp = end;                    /* @timestamp is event.end */
        stamp_n = end_n;
    } else {                            /* the sweep's other reports share it */
        if (!(self->stamp_n > 0 && self->stamp_ts == ts)) {
            self->stamp_n = 0;
            int k = iso_text(self, ts, self->stamp_text);
            if (k < 0) goto error;
            if (k == 0) goto python_fid;
            self->stamp_n = k;
            self->stamp_ts = ts;
        }
        stamp = self->stamp_text;
        stamp_n = self->stamp_n;
    }
    rec->reports = reports + 1;

    Py_ssize_t bound = LINE_FIXED + 16 * NUM_MAX + stamp_n + end_n + reason_n + pn[0] + pn[1] + pn[2] + pn[3] + pn[4]
                       + pn[5] + tail_n;
    int block = self->pending != NULL && self->publish_block != NULL;
    char *w, *base;
    if (block) {
        if (buf_reserve(&self->data, bound) < 0) goto error;
        base = PyBytes_AS_STRING(self->data.obj) + self->data.len;
    } else {
        if (!(line = PyBytes_FromStringAndSize(NULL, bound))) goto error;
        base = PyBytes_AS_STRING(line);
    }
    w = PUT_LIT(base, "{\"@timestamp\":\"");
    w = put_mem(w, stamp, stamp_n);
    w = final ? PUT_LIT(w, EVENT_HEAD ",\"end\"],\"start\":\"") : PUT_LIT(w, EVENT_HEAD "],\"start\":\"");
    w = put_mem(w, pp[0], pn[0]);
    w = put_mem(w, end, end_n);
    w = PUT_LIT(w, "\",\"duration\":");
    w = put_dec(w, duration * 1000);
    w = put_mem(w, pp[1], pn[1]);
    if (final) {
        w = PUT_LIT(w, "true");
        if (reason_p != NULL) {
            w = PUT_LIT(w, ",\"end_reason\":\"");
            w = put_mem(w, reason_p, reason_n);
            *w++ = '"';
        }
    } else {
        w = PUT_LIT(w, "false");
    }
    if (has_tcp) {
        w = PUT_LIT(w, ",\"tcp\":{\"syn_packets\":"); w = put_dec(w, tcpn[0]);
        w = PUT_LIT(w, ",\"fin_packets\":"); w = put_dec(w, tcpn[1]);
        w = PUT_LIT(w, ",\"rst_packets\":"); w = put_dec(w, tcpn[2]);
        w = PUT_LIT(w, ",\"source_retransmitted_bytes\":"); w = put_dec(w, tcpn[3]);
        w = PUT_LIT(w, ",\"destination_retransmitted_bytes\":"); w = put_dec(w, tcpn[4]);
        if (rtt) {
            w = PUT_LIT(w, ",\"rtt\":{\"server_us\":"); w = put_dec(w, rttv[0]);
            if (rtt == 2) {
                w = PUT_LIT(w, ",\"client_us\":"); w = put_dec(w, rttv[1]);
                w = PUT_LIT(w, ",\"handshake_us\":"); w = put_dec(w, rttv[2]);
            }
            w = PUT_LIT(w, "}}");
        } else {
            *w++ = '}';
        }
    }
    w = put_mem(w, pp[2], pn[2]);
    w = put_dec(w, n[0]);
    w = PUT_LIT(w, ",\"bytes\":");
    w = put_dec(w, n[2]);
    w = put_mem(w, pp[3], pn[3]);
    w = put_dec(w, n[1]);
    w = PUT_LIT(w, ",\"bytes\":");
    w = put_dec(w, n[3]);
    w = put_mem(w, pp[4], pn[4]);
    w = put_dec(w, n[2] + n[3]);
    w = PUT_LIT(w, ",\"packets\":");
    w = put_dec(w, n[0] + n[1]);
    w = put_mem(w, pp[5], pn[5]);
    w = put_mem(w, PyBytes_AS_STRING(tail), tail_n);

    if (block) {        /* the line and its _id appended to the block: no Python object per report */
        *w++ = '\n';
        self->data.len += w - base;
        if (buf_reserve(&self->ids, fid_n + NUM_MAX + 2) < 0) goto error;
        w = base = PyBytes_AS_STRING(self->ids.obj) + self->ids.len;
        w = put_mem(w, fid_p, fid_n);       /* f"{fid}-{reports}" */
        *w++ = '-';
        w = put_dec(w, reports);
        *w++ = '\n';
        self->ids.len += w - base;
        self->nblock++;
        if ((self->nblock >= self->block_docs || self->data.len >= self->block_bytes) && hand_over_block(self) < 0)
            goto error;
        rc = 0;
        goto error;         /* done */
    }
    if (_PyBytes_Resize(&line, w - base) < 0) goto error;      /* (frees it on failure) */
    /* _id: flow.id's text, "-", the report's number, made once from its UTF-8 (flow.id's text
     * comes with the cached parts: no str of it is made only to be formatted) */
    char idbuf[128];
    if (fid_n <= (Py_ssize_t)sizeof idbuf - NUM_MAX - 1) {
        memcpy(idbuf, fid_p, (size_t)fid_n);
        idbuf[fid_n] = '-';
        doc_id = PyUnicode_DecodeUTF8(idbuf, put_dec(idbuf + fid_n + 1, reports) - idbuf, NULL);
    } else {
        if (fid == NULL && !(fid = PyUnicode_DecodeUTF8(fid_p, fid_n, NULL))) goto error;
        doc_id = PyUnicode_FromFormat("%U-%lld", fid, reports);
    }
    if (doc_id == NULL) goto error;
    frag = PyObject_CallOneArg(self->fragment, line);
    if (frag == NULL) goto error;
    if (self->pending != NULL) {        /* a sweep: published together at its end */
        PyObject *item = untracked(PyTuple_Pack(2, doc_id, frag));
        if (item == NULL) goto error;
        int failed = PyList_Append(self->pending, item);
        Py_DECREF(item);
        if (failed) goto error;
        /* A sweep or the end of input can report every live flow (up to max_flows):
         * handed over every MAX_COLLECTED, so the reports waiting here stay bounded. */
        if (PyList_GET_SIZE(self->pending) >= MAX_COLLECTED && publish_pending(self) < 0) goto error;
    } else {
        PyObject *publish = PyObject_GetAttr(self->reporter, str_publish);
        if (publish == NULL) goto error;
        PyObject *args[2] = {doc_id, frag};
        res = PyObject_Vectorcall(publish, args, 2, NULL);
        Py_DECREF(publish);
        if (res == NULL) goto error;
        Py_DECREF(res);
    }
    rc = 0;
error:
    Py_XDECREF(frag);
    Py_XDECREF(line);
    Py_XDECREF(doc_id);
    Py_XDECREF(tail);
    Py_XDECREF(parts);
    Py_XDECREF(fid);
    return rc;
python_fid:
    Py_XDECREF(tail);
    Py_XDECREF(parts);
    Py_XDECREF(fid);
python:
    res = call_report_python(self, source, reco, final ? Py_True : Py_False, reason, report_ts);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

static PyObject *reporter_call(ReporterObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "report(source, rec, final, reason, report_ts): five positional arguments");
        return NULL;
    }
    int final = PyObject_IsTrue(args[2]);
    if (final < 0) return NULL;
    if (!(args[2] == Py_True || args[2] == Py_False)) {    /* keep the caller's object for Python */
        PyObject *res = call_report_python(self, args[0], args[1], args[2], args[3], args[4]);
        return res;
    }
    int as_text = as_text_of(self);
    if (as_text < 0 || report(self, as_text, args[0], args[1], final, args[3], args[4]) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *reporter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *reporter, *report_python, *assign_id, *iso_time, *fragment, *community_id, *transports, *tail,
             *id_source;
    if (!PyArg_ParseTuple(args, "OOOOOOO!OO:Reporter", &reporter, &report_python, &assign_id, &iso_time,
                          &fragment, &community_id, &PyDict_Type, &transports, &tail, &id_source))
        return NULL;
    ReporterObject *self = (ReporterObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)reporter_call;
    self->reporter = Py_NewRef(reporter);
    self->report_python = Py_NewRef(report_python);
    self->assign_id = Py_NewRef(assign_id);
    self->iso_time = Py_NewRef(iso_time);
    self->fragment = Py_NewRef(fragment);
    self->community_id = Py_NewRef(community_id);
    self->transports = Py_NewRef(transports);
    self->tail = Py_NewRef(tail);
    self->id_source = Py_NewRef(id_source);
    self->id_key = self->id_bytes = self->tail_key = self->tail_bytes = self->dir_obj = self->dir_kinds = self->dir_tests = self->dir_ranges = self->pending = self->publish_block = NULL;
    self->block_docs = self->block_bytes = self->nblock = 0;
    self->data = (buf_t){0};
    self->ids = (buf_t){0};
    self->stamp_n = 0;
    self->stamp_ts = 0.0;
    self->seconds.second = self->seconds.day = -1;
    PyObject *max = PyObject_GetAttr(reporter, str_max_flows);
    self->max_flows = max == NULL ? -1 : PyLong_AsSsize_t(max);
    Py_XDECREF(max);
    if (self->max_flows == -1 && PyErr_Occurred()) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int reporter_traverse(ReporterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reporter); Py_VISIT(self->report_python);
    Py_VISIT(self->assign_id); Py_VISIT(self->iso_time); Py_VISIT(self->fragment);
    Py_VISIT(self->community_id); Py_VISIT(self->transports); Py_VISIT(self->tail);
    Py_VISIT(self->id_source); Py_VISIT(self->pending); Py_VISIT(self->publish_block);
    Py_VISIT(self->dir_obj); Py_VISIT(self->dir_kinds); Py_VISIT(self->dir_tests); Py_VISIT(self->dir_ranges);
    return 0;
}

static int reporter_clear(ReporterObject *self)
{
    Py_CLEAR(self->reporter); Py_CLEAR(self->report_python);
    Py_CLEAR(self->assign_id); Py_CLEAR(self->iso_time); Py_CLEAR(self->fragment);
    Py_CLEAR(self->community_id); Py_CLEAR(self->transports); Py_CLEAR(self->tail);
    Py_CLEAR(self->id_source); Py_CLEAR(self->id_key); Py_CLEAR(self->id_bytes); Py_CLEAR(self->pending);
    Py_CLEAR(self->tail_key); Py_CLEAR(self->tail_bytes);
    Py_CLEAR(self->dir_obj); Py_CLEAR(self->dir_kinds); Py_CLEAR(self->dir_tests); Py_CLEAR(self->dir_ranges);
    Py_CLEAR(self->publish_block);
    return 0;
}

static void reporter_dealloc(ReporterObject *self)
{
    PyObject_GC_UnTrack(self);
    reporter_clear(self);
    buf_free(&self->data);
    buf_free(&self->ids);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *reporter_flow_id(ReporterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "flow_id(source, rec): a source and a flow record");
        return NULL;
    }
    if (!IS_RECORD(args[1]))       /* a record of the Python path (a list): _assign_id */
        return PyObject_Vectorcall(self->assign_id, args, 2, NULL);
    return flow_id(self, args[0], (RecordObject *)args[1]);
}

static PyObject *reporter_blocks(ReporterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t docs, bytes;
    if (nargs != 3 || (args[0] != Py_None && !PyCallable_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError, "blocks(publish_block or None, max_docs, max_bytes)");
        return NULL;
    }
    docs = PyLong_AsSsize_t(args[1]);
    if (docs == -1 && PyErr_Occurred()) return NULL;
    bytes = PyLong_AsSsize_t(args[2]);
    if (bytes == -1 && PyErr_Occurred()) return NULL;
    if (docs < 1 || bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "blocks: max_docs and max_bytes must be positive");
        return NULL;
    }
    if (hand_over_block(self) < 0) return NULL;     /* what the old sink was given */
    Py_XSETREF(self->publish_block, args[0] == Py_None ? NULL : Py_NewRef(args[0]));
    self->block_docs = docs;
    self->block_bytes = bytes;
    Py_RETURN_NONE;
}

static PyMethodDef reporter_methods[] = {
    {"blocks", (PyCFunction)(void (*)(void))reporter_blocks, METH_FASTCALL,
     "blocks(publish_block, max_docs, max_bytes): while collecting, text reports are appended to one "
     "NDJSON block handed over as publish_block(data, ids, count) (None: blocks off)"},
    {"flow_id", (PyCFunction)(void (*)(void))reporter_flow_id, METH_FASTCALL,
     "flow_id(source, rec) -> flow.id: the record's, else assigned as _assign_id does (and kept)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReporterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._flowcore.Reporter",
    .tp_doc = "Reporter(reporter, report_python, assign_id, iso_time, fragment, community_id, "
              "transports, tail, id_source): "
              "called as FlowReporter.report(source, rec, final, reason, report_ts)",
    .tp_basicsize = sizeof(ReporterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ReporterObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = reporter_new,
    .tp_traverse = (traverseproc)reporter_traverse,
    .tp_clear = (inquiry)reporter_clear,
    .tp_dealloc = (destructor)reporter_dealloc,
    .tp_methods = reporter_methods,
};

/* ---- Table: FlowTable.account and the sweep's loop ------------------------------- */

static int is_icmp4_with_id(unsigned t) { return t == 0 || t == 8 || (t >= 13 && t <= 18); }

#define RAW_KEY_MAX 52      /* the longest key a slot holds: IPv6 with the MAC pair and one VLAN id */

/* A frame prefetch_raw was given: its slot pair, its key's length as raw_key writes it (0: none)
 * and the key's last 8 bytes (enough to pick the slot to prefetch from: a wrong pick only
 * fetches a line for nothing) */
struct ahead {
    Py_ssize_t pair;
    int n;
    uint64_t tail;
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *table, *flows, *alias, *open, *control, *end, *account_python, *source, *by_endpoints, *ended;
    PyObject *flow_id_python, *ip_packed;
    /* The records in the order their flows opened (FlowTable.order of the Python path), oldest
     * first, linked through the records themselves (older/newer): how a full table finds its
     * oldest flows. Joining and leaving it costs no hashing and no allocation (the OrderedDict
     * of id(record) -> record it replaces cost ~1,800 instructions a flow). */
    struct RecordObject *oldest, *newest;
    /* order_exact: the open order is exactly the records `flows` holds under their own key
     * (R_KEY), in `flows`' order, as it stays while only the C core changes `flows` (a new
     * flow's key is new to the dict: it comes last there too). Anything else that could upset
     * that (Python code changing `flows`: invalidate(), link() or unlink(); a key given another
     * entry) clears it and counts in order_breaks; a sweep that walks `flows` and finds the
     * order exact again sets it. A sweep walks the open order while it is exact. */
    int order_exact;
    unsigned long long order_breaks;
    Py_ssize_t known_size;          /* len(flows) as the C core's own changes left it (order_exact holds
                                     * only while len(flows) is still that: nobody else added or deleted) */
    ReporterObject *reporter;
    struct kslot *cache;            /* the key cache (account_raw), `slots` of them, in cache_mem */
    void *cache_mem;
    Py_ssize_t slots;
    unsigned long long hits, misses;
    /* the slot whose entry is the record of the last packet account_raw accounted, as index + 1
     * (0: none known): table_flow_id answers from that record when it is the transaction's flow
     * (id_of_last) */
    Py_ssize_t last_slot;
    /* transactions' flow.id answered from that record (id_of_last), and by the lookups */
    unsigned long long ids_of_last, ids_looked_up;
    long long opened;               /* flows open_entry opened (FlowTable.counters adds it to `opened`) */
    unsigned long long generation;  /* + 1 whenever a key leaves `flows` or gets another entry */
    PyObject *lto;                  /* account_raw's last linktype object (held) and its value */
    long linktype;
    /* the last two frames prefetch_raw was given, the later at ahead[next_ahead ^ 1] */
    struct ahead ahead[2];
    int next_ahead;
} TableObject;

static PyObject *endpoints(PyObject *key);
static int evict(TableObject *self);
static int add_attr(PyObject *o, PyObject *name, long long delta);
static void bump_generation(TableObject *self);

/* Dict operations given the key's hash (a tuple does not keep its hash: computed once per
 * key and open or end, not per operation). CPython 3.13 took these out of its public headers:
 * there, the plain calls, which hash the key themselves. */
#if PY_VERSION_HEX < 0x030D0000
#define GET_KNOWN(d, k, h) _PyDict_GetItem_KnownHash((d), (k), (h))
#define SET_KNOWN(d, k, v, h) _PyDict_SetItem_KnownHash((d), (k), (v), (h))
#define DEL_KNOWN(d, k, h) _PyDict_DelItem_KnownHash((d), (k), (h))
#define CONTAINS_KNOWN(d, k, h) _PyDict_Contains_KnownHash((d), (k), (h))
#else
#define GET_KNOWN(d, k, h) PyDict_GetItemWithError((d), (k))
#define SET_KNOWN(d, k, v, h) PyDict_SetItem((d), (k), (v))
#define DEL_KNOWN(d, k, h) PyDict_DelItem((d), (k))
#define CONTAINS_KNOWN(d, k, h) PyDict_Contains((d), (k))
#endif

/* flows[key] = rec (`hash`: the key's hash, -1: not known yet); a key that had another entry
 * makes the key cache's entries stale. */
static void order_unsure(TableObject *self)
{
    self->order_exact = 0;
    self->order_breaks++;
}

static int set_entry(TableObject *self, PyObject *key, PyObject *rec, Py_hash_t hash)
{
    Py_ssize_t before = PyDict_GET_SIZE(self->flows);
    if (hash == -1 && (hash = PyObject_Hash(key)) == -1) return -1;
    if (SET_KNOWN(self->flows, key, rec, hash) < 0) return -1;
    if (PyDict_GET_SIZE(self->flows) == before) {
        bump_generation(self);
        order_unsure(self);
    } else if (before == self->known_size) {
        self->known_size = PyDict_GET_SIZE(self->flows);
    }
    return 0;
}

/* rec joins the open order as its newest; the order holds a reference to it. A record already
 * in it keeps its place (as order[id(rec)] = rec did); one in another table's order stays there. */
static void order_link(TableObject *self, RecordObject *rec)
{
    if (rec->order_owner != NULL) return;
    Py_INCREF(rec);
    rec->order_owner = self;
    rec->older = self->newest;
    rec->newer = NULL;
    if (self->newest != NULL) self->newest->newer = rec;
    else self->oldest = rec;
    self->newest = rec;
}

/* rec leaves the open order, if in it (order.pop(id(rec), None)); the caller holds it. A record
 * of another table's order stays in that one (unlinking it here would break both lists). */
static void order_unlink(TableObject *self, RecordObject *rec)
{
    if (rec->order_owner != self) return;
    if (rec->older != NULL) rec->older->newer = rec->newer;
    else self->oldest = rec->newer;
    if (rec->newer != NULL) rec->newer->older = rec->older;
    else self->newest = rec->older;
    rec->older = rec->newer = NULL;
    rec->order_owner = NULL;
    Py_DECREF(rec);
}

/* What the Python methods (_alias, _open, _control) return, (record, direction, ...): the
 * record (a new reference, stealing `res`) and *d; NULL with an exception. */
static RecordObject *unpack_entry(PyObject *res, int *d)
{
    long long dd;
    if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) < 2 || !IS_RECORD(PyTuple_GET_ITEM(res, 0))
            || !get_ll(PyTuple_GET_ITEM(res, 1), &dd) || (dd != 0 && dd != 1)) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "flow table entry is not (Record, direction)");
        return NULL;
    }
    RecordObject *rec = (RecordObject *)Py_NewRef(PyTuple_GET_ITEM(res, 0));
    *d = (int)dd;
    Py_DECREF(res);
    return rec;
}

/* The record flows[key] holds (a new reference) and *d, NULL when none (an exception set if
 * the lookup failed or it is not a Record). */
static RecordObject *lookup_known(TableObject *self, PyObject *key, Py_hash_t hash, int *d)
{
    PyObject *found = GET_KNOWN(self->flows, key, hash);
    if (found == NULL) return NULL;
    if (!IS_RECORD(found)) {
        PyErr_SetString(PyExc_TypeError, "flow table entry is not a Record");
        return NULL;
    }
    int dd = direction_on((RecordObject *)found, key);
    if (dd < 0) return NULL;
    *d = dd;
    return (RecordObject *)Py_NewRef(found);
}

static RecordObject *lookup(TableObject *self, PyObject *key, int *d)
{
    Py_hash_t hash = PyObject_Hash(key);
    return hash == -1 ? NULL : lookup_known(self, key, hash, d);
}

/* FlowTable._alias: the reverse direction of a flow whose frames carry the same MAC order
 * both ways: its record (a new reference, *d = 1); NULL without an exception when none. */
static RecordObject *alias_entry(TableObject *self, PyObject *key, int *d)
{
    PyObject *macs = PyTuple_GET_ITEM(key, 0);
    Py_ssize_t n = PyBytes_GET_SIZE(macs);
    const char *m = PyBytes_AS_STRING(macs);
    /* not macs, or macs[:6] == macs[6:] */
    /* (MACs of another length, a frame cut short, are the same both ways: open_entry) */
    if (n != 12 || memcmp(m, m + 6, 6) == 0) return NULL;
    char buf[12];
    memcpy(buf, m + 6, 6);
    memcpy(buf + 6, m, 6);
    PyObject *swapped = PyTuple_New(8);
    if (swapped == NULL) return NULL;
    PyObject *sm = PyBytes_FromStringAndSize(buf, 12);
    if (sm == NULL) { Py_DECREF(swapped); return NULL; }
    PyTuple_SET_ITEM(swapped, 0, sm);
    for (int i = 1; i < 8; i++) PyTuple_SET_ITEM(swapped, i, Py_NewRef(PyTuple_GET_ITEM(key, i)));
    int dd = 0;
    RecordObject *rec = lookup(self, swapped, &dd);
    Py_DECREF(swapped);
    if (rec == NULL) return NULL;
    if (rec->alias != NULL || dd == 0) { Py_DECREF(rec); return NULL; }   /* (dd 0: another flow) */
    Py_XSETREF(rec->alias, Py_NewRef(key));
    if (set_entry(self, key, (PyObject *)rec, -1) < 0) { Py_DECREF(rec); return NULL; }
    *d = 1;
    return rec;
}

/* FlowTable._open for a key of the common shape (else the Python method): a new record
 * under both directions' keys; a new reference, *d = 0. */
static RecordObject *open_entry(TableObject *self, PyObject *key, Py_hash_t hash, PyObject *ts, double tsd,
                                PyObject *payload, const unsigned char *p, Py_ssize_t plen, int *d)
{
    PyObject *macs = PyTuple_GET_ITEM(key, 0), *outer = PyTuple_GET_ITEM(key, 2);
    long long proto;
    Py_ssize_t nouter = PyTuple_CheckExact(outer) ? PyTuple_GET_SIZE(outer) : -1;
    if (nouter < 0 || nouter > 2 || !get_ll(PyTuple_GET_ITEM(key, 5), &proto)) {
        PyObject *made = payload ? NULL : PyBytes_FromStringAndSize((const char *)p, plen);
        if (!payload && !made) return NULL;
        PyObject *args[3] = {key, ts, payload ? payload : made};
        PyObject *r = PyObject_Vectorcall(self->open, args, 3, NULL);
        Py_XDECREF(made);
        return r == NULL ? NULL : unpack_entry(r, d);
    }
    Py_ssize_t max_flows = self->reporter->max_flows;
    if (max_flows < 1) max_flows = 1;
    if (PyDict_GET_SIZE(self->flows) >= 2 * max_flows && evict(self) < 0) return NULL;
    /* rev_key: (macs[6:] + macs[:6], vlans, outer[::-1], dst, src, proto, dport, sport); MACs
     * not 12 bytes long (a frame cut short) stay as they are: the reverse of the reverse key must
     * be the key, or a new flow's reverse key could be another flow's key and take its entry */
    PyObject *rev = PyTuple_New(8), *ends = NULL, *o;
    RecordObject *rec = NULL;
    if (rev == NULL) return NULL;
    if (PyBytes_GET_SIZE(macs) == 12) {
        char buf[12];
        memcpy(buf, PyBytes_AS_STRING(macs) + 6, 6);
        memcpy(buf + 6, PyBytes_AS_STRING(macs), 6);
        o = PyBytes_FromStringAndSize(buf, 12);
    } else {
        o = Py_NewRef(macs);
    }
    if (o == NULL) goto error;
    PyTuple_SET_ITEM(rev, 0, o);
    PyTuple_SET_ITEM(rev, 1, Py_NewRef(PyTuple_GET_ITEM(key, 1)));
    if (nouter == 2) {
        o = PyTuple_Pack(2, PyTuple_GET_ITEM(outer, 1), PyTuple_GET_ITEM(outer, 0));
        if (o == NULL) goto error;
    } else {
        o = Py_NewRef(outer);       /* () or one element: its own reverse */
    }
    PyTuple_SET_ITEM(rev, 2, o);
    PyTuple_SET_ITEM(rev, 3, Py_NewRef(PyTuple_GET_ITEM(key, 4)));
    PyTuple_SET_ITEM(rev, 4, Py_NewRef(PyTuple_GET_ITEM(key, 3)));
    PyTuple_SET_ITEM(rev, 5, Py_NewRef(PyTuple_GET_ITEM(key, 5)));
    PyTuple_SET_ITEM(rev, 6, Py_NewRef(PyTuple_GET_ITEM(key, 7)));
    PyTuple_SET_ITEM(rev, 7, Py_NewRef(PyTuple_GET_ITEM(key, 6)));
    if (PyObject_GC_IsTracked(key)) {
        untracked_key(rev);
    } else {
        /* an untracked key holds only untracked objects (untracked_key decided so): its reverse,
         * the same objects and a new MAC pair and outer pair, is untracked as well */
        if (nouter == 2) PyObject_GC_UnTrack(PyTuple_GET_ITEM(rev, 2));
        PyObject_GC_UnTrack(rev);
    }
    /* [ts, ts, 0, 0, 0, 0, key, rev, 0, None, tcp, None, icmp, None, None, None, None] */
    if (!(rec = record_alloc(proto == 6))) goto error;
    rec->ts[0] = rec->ts[1] = tsd;
    rec->key = Py_NewRef(key);
    rec->rev_key = Py_NewRef(rev);
    if ((proto == 1 || proto == 58) && plen >= 2 && !(rec->icmp = untracked(Py_BuildValue("(ii)", p[0], p[1]))))
        goto error;
    if (proto == 6) tcp_reset(rec);
    /* rev == key only for a host talking to itself (source and destination the same): other
     * keys skip comparing the tuples */
    PyObject *src = PyTuple_GET_ITEM(key, 3), *dst = PyTuple_GET_ITEM(key, 4);
    int same = PyBytes_CheckExact(src) && PyBytes_CheckExact(dst)
               && (PyBytes_GET_SIZE(src) != PyBytes_GET_SIZE(dst)
                   || memcmp(PyBytes_AS_STRING(src), PyBytes_AS_STRING(dst), (size_t)PyBytes_GET_SIZE(src)) != 0)
               ? 0 : PyObject_RichCompareBool(rev, key, Py_EQ);
    if (same < 0) goto error;
    rec->rev_same = (unsigned char)same;
    rec->khash[0] = hash;
    if (set_entry(self, key, (PyObject *)rec, hash) < 0) goto error;
    if (!same && (key_hash(rec, 1) == -1 || set_entry(self, rev, (PyObject *)rec, rec->khash[1]) < 0)) goto error;
    if (!(ends = endpoints(key)) || (rec->ends_hash = PyObject_Hash(ends)) == -1
            || SET_KNOWN(self->by_endpoints, ends, (PyObject *)rec, rec->ends_hash) < 0)
        goto error;
    rec->ends = Py_NewRef(ends);
    order_link(self, rec);
    self->opened++;         /* (not table.opened += 1: a Python attribute's round trip per flow) */
    Py_DECREF(rev);
    Py_DECREF(ends);
    *d = 0;
    return rec;
error:
    Py_DECREF(rev); Py_XDECREF(rec); Py_XDECREF(ends);
    return NULL;
}

/* FlowTable._control in C, but for a new SYN on a closed flow (the old flow ends, a new one
 * opens: the Python method's job): SYN/FIN/RST counts and the handshake. 1: done; 0: nothing
 * changed, the Python method must do it (that case, values Python code set out of range). */
static int control_c(RecordObject *rec, int d, unsigned flags, double ts)
{
    long long fin_dirs = TCP_SLOT(rec, T_FIN_DIRS).i;
    if (((flags & 0x12) == 0x02 && rec->closed != NULL) || fin_dirs < 0 || fin_dirs > 3
            || TCP_SLOT(rec, T_SYN).i == LLONG_MAX || TCP_SLOT(rec, T_FIN).i == LLONG_MAX || TCP_SLOT(rec, T_RST).i == LLONG_MAX)
        return 0;
    if (flags & 0x02) {
        TCP_SLOT(rec, T_SYN).i++;
        if (flags & 0x10) {                                 /* SYN/ACK */
            if ((rec->t_none & (1 << T_SYNACK_TS)) && TCP_SLOT(rec, T_SYN_DIR).i == 1 - d) {
                TCP_SLOT(rec, T_SYNACK_TS).f = ts;
                rec->t_none &= (unsigned short)~(1 << T_SYNACK_TS);
                TCP_SLOT(rec, T_AWAIT_ACK_DIR).i = 1 - d;
            }
        } else if (rec->t_none & (1 << T_SYN_TS)) {
            TCP_SLOT(rec, T_SYN_TS).f = ts;
            rec->t_none &= (unsigned short)~(1 << T_SYN_TS);
            TCP_SLOT(rec, T_SYN_DIR).i = d;
        }
    } else if (TCP_SLOT(rec, T_AWAIT_ACK_DIR).i == d && (flags & 0x10)) {    /* the handshake's third packet */
        TCP_SLOT(rec, T_ACK_TS).f = ts;
        rec->t_none &= (unsigned short)~(1 << T_ACK_TS);
        TCP_SLOT(rec, T_AWAIT_ACK_DIR).i = -1;
    }
    if (flags & 0x01) {
        TCP_SLOT(rec, T_FIN).i++;
        TCP_SLOT(rec, T_FIN_DIRS).i = fin_dirs | (1LL << d);
        if (TCP_SLOT(rec, T_FIN_DIRS).i == 3 && rec->closed == NULL) rec->closed = Py_NewRef(str_fin);
    }
    if (flags & 0x04) {
        TCP_SLOT(rec, T_RST).i++;
        if (rec->closed == NULL) rec->closed = Py_NewRef(str_rst);
    }
    return 1;
}


/* What accounting reads from the transport header: FlowTable.account_python's unpacking. */
typedef struct {
    unsigned sport, dport, flags, offset;
    uint32_t seq;
    int tcp;            /* a TCP header of 20 bytes or more: the TCP bookkeeping runs */
} l4_t;

static void read_l4(long long proto, const unsigned char *p, Py_ssize_t plen, l4_t *l)
{
    memset(l, 0, sizeof *l);
    l->tcp = proto == 6 && plen >= 20;
    if (l->tcp) {
        l->sport = u16(p); l->dport = u16(p + 2);
        l->seq = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
        l->offset = p[12]; l->flags = p[13];
    } else if (proto == 17) {
        if (plen >= 4) { l->sport = u16(p); l->dport = u16(p + 2); }
    } else if (proto == 1) {
        if (plen >= 6 && is_icmp4_with_id(p[0])) l->sport = l->dport = u16(p + 4);
    } else if (proto == 58) {
        if (plen >= 6 && (p[0] == 128 || p[0] == 129)) l->sport = l->dport = u16(p + 4);
    }
}

/* The record under `key` (a new reference) and *d: the table's, a MAC-order alias, or a new
 * flow's. The packet's transport bytes are p/plen; `payload`, the same as an object, may be NULL. */
static RecordObject *find_entry(TableObject *self, PyObject *key, PyObject *ts, double tsd, PyObject *payload,
                                const unsigned char *p, Py_ssize_t plen, int *d)
{
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) return NULL;
    RecordObject *rec = lookup_known(self, key, hash, d);
    if (rec != NULL || PyErr_Occurred()) return rec;
    rec = alias_entry(self, key, d);
    if (rec != NULL || PyErr_Occurred()) return rec;
    return open_entry(self, key, hash, ts, tsd, payload, p, plen, d);
}

static int add_count(long long *field, long long delta)
{
    if (__builtin_add_overflow(*field, delta, field)) {
        *field -= delta;
        PyErr_SetString(PyExc_OverflowError, "flow record counts are 64-bit ints");
        return -1;
    }
    return 0;
}

/* The packet on its flow's record (direction d): TCP control flags and sequence bookkeeping,
 * then the record's last time, packets and bytes. `payload` may be NULL: made from p/plen if
 * the Python _control needs it; `key` may be NULL: the record's key `which` (0 R_KEY, 1
 * R_REV_KEY, 2 R_ALIAS), found only then. 0, or -1 with an exception set. */
static int apply(TableObject *self, PyObject *key, int which, RecordObject *rec, int d, PyObject *ts, double tsd,
                 Py_ssize_t flen, const l4_t *l, const unsigned char *p, Py_ssize_t plen, PyObject *payload)
{
    RecordObject *other = NULL;     /* the record Python's _control gave (a new flow), held here */
    PyObject *made = NULL, *held_key = NULL, *held_rec = NULL;
    if (l->tcp) {
        if (!rec->has_tcp) {
            PyErr_SetString(PyExc_TypeError, "TCP flow record without its TCP part");
            return -1;
        }
        int done = 1;          /* SYN, FIN, RST, the handshake's ACK: control_c, else _control */
        if ((l->flags & 0x07) || TCP_SLOT(rec, T_AWAIT_ACK_DIR).i == d) done = control_c(rec, d, l->flags, tsd);
        if (!done) {
            if (payload == NULL && !(payload = made = PyBytes_FromStringAndSize((const char *)p, plen))) return -1;
            if (key == NULL)        /* from the key cache: the record's own key `which` (see struct kslot) */
                key = which == 0 ? rec->key : which == 1 ? rec->rev_key : rec->alias;
            if (key == NULL) {
                Py_XDECREF(made);
                PyErr_SetString(PyExc_TypeError, "flow record without its keys");
                return -1;
            }
            Py_INCREF(key);         /* the caller's may be borrowed from the key cache: held while Python runs */
            Py_INCREF(rec);
            held_key = key;
            held_rec = (PyObject *)rec;
            PyObject *dd = PyLong_FromLong(d), *ff = PyLong_FromLong((long)l->flags), *tcp = record_item((PyObject *)rec, R_TCP);
            PyObject *res = NULL;
            if (dd != NULL && ff != NULL && tcp != NULL) {
                PyObject *cargs[7] = {key, (PyObject *)rec, dd, tcp, ff, ts, payload};
                res = PyObject_Vectorcall(self->control, cargs, 7, NULL);
            }
            Py_XDECREF(dd);
            Py_XDECREF(ff);
            Py_XDECREF(tcp);
            if (res == NULL || !(other = unpack_entry(res, &d))) goto error;
            rec = other;
            if (!rec->has_tcp) {
                PyErr_SetString(PyExc_TypeError, "TCP flow record without its TCP part");
                goto error;
            }
        }
        long long data_len = (long long)plen - (long long)(l->offset >> 4) * 4;
        if (data_len > 0) {
            long long high = TCP_SLOT(rec, T_HIGH + d).i;
            long long behind = (high - (long long)l->seq) & 0xFFFFFFFFLL;
            long long next = ((long long)l->seq + data_len) & 0xFFFFFFFFLL;
            if (high < 0 || behind >= 0x80000000LL) {
                TCP_SLOT(rec, T_HIGH + d).i = next;
            } else {
                if (behind && add_count(&TCP_SLOT(rec, T_RETRANS + d).i, behind < data_len ? behind : data_len) < 0)
                    goto error;
                if (behind < data_len) TCP_SLOT(rec, T_HIGH + d).i = next;
            }
        }
    }
    if (rec->n[d] == LLONG_MAX || rec->n[2 + d] > LLONG_MAX - flen) {
        PyErr_SetString(PyExc_OverflowError, "flow record counts are 64-bit ints");
        goto error;
    }
    rec->ts[1] = tsd;
    rec->n[d] += 1;
    rec->n[2 + d] += flen;
    Py_XDECREF(other);
    Py_XDECREF(made);
    Py_XDECREF(held_key);
    Py_XDECREF(held_rec);
    return 0;
error:
    Py_XDECREF(other);
    Py_XDECREF(made);
    Py_XDECREF(held_key);
    Py_XDECREF(held_rec);
    return -1;
}

static PyObject *table_account(TableObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    double tsd;
    self->last_slot = 0;
    if (kwnames != NULL || nargs < 8 || nargs > 9 || !PyBytes_CheckExact(args[2]) || !PyBytes_CheckExact(args[7])
            || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[6]))
        return PyObject_Vectorcall(self->account_python, args, nargsf, kwnames);
    PyObject *ts = args[0], *frame = args[2], *payload = args[7], *proto_o = args[6];
    if (PyFloat_CheckExact(ts)) tsd = PyFloat_AS_DOUBLE(ts);
    else if (!PyLong_CheckExact(ts) || time_of(ts, &tsd) < 0) {      /* account_python: float(ts) decides */
        PyErr_Clear();
        return PyObject_Vectorcall(self->account_python, args, nargsf, kwnames);
    }
    PyObject *outer = nargs == 9 ? args[8] : empty_tuple;
    long long linktype, proto;
    if (!get_ll(args[1], &linktype) || !get_ll(proto_o, &proto))
        return PyObject_Vectorcall(self->account_python, args, nargsf, kwnames);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t plen = PyBytes_GET_SIZE(payload), flen = PyBytes_GET_SIZE(frame);
    l4_t l;
    read_l4(proto, p, plen, &l);

    PyObject *key = PyTuple_New(8);
    RecordObject *rec = NULL;
    PyObject *macs;
    if (key == NULL) return NULL;
    if (linktype == 1)
        macs = PyBytes_FromStringAndSize(PyBytes_AS_STRING(frame), flen < 12 ? flen : 12);
    else
        macs = Py_NewRef(empty_bytes);
    if (macs == NULL) goto error;
    PyTuple_SET_ITEM(key, 0, macs);
    PyTuple_SET_ITEM(key, 1, Py_NewRef(args[3]));
    PyTuple_SET_ITEM(key, 2, Py_NewRef(outer));
    PyTuple_SET_ITEM(key, 3, Py_NewRef(args[4]));
    PyTuple_SET_ITEM(key, 4, Py_NewRef(args[5]));
    PyTuple_SET_ITEM(key, 5, Py_NewRef(proto_o));
    PyObject *o = PyLong_FromLong((long)l.sport);
    if (o == NULL) goto error;
    PyTuple_SET_ITEM(key, 6, o);
    o = PyLong_FromLong((long)l.dport);
    if (o == NULL) goto error;
    PyTuple_SET_ITEM(key, 7, o);
    untracked_key(key);

    int d = 0;
    if (!(rec = find_entry(self, key, ts, tsd, payload, p, plen, &d))
            || apply(self, key, 0, rec, d, ts, tsd, flen, &l, p, plen, payload) < 0)
        goto error;
    Py_DECREF(rec);
    Py_DECREF(key);
    Py_RETURN_NONE;
error:
    Py_XDECREF(rec);
    Py_DECREF(key);
    return NULL;
}

/* ---- the key cache: account for frames beat/_speedups.c has walked --------------- */
/* frame_batch (beat/_speedups.c) calls account_raw through the capsule (beat/_flowapi.h)
 * for every IP frame it handles, instead of the Python call with a key tuple built per
 * packet. A frame's key is written as bytes (raw_key) and looked up in a cache of slots of
 * one cache line each, in pairs (the pair's last used first), that hold those bytes and the
 * record the table had under that key. A hit, when no key has left the table or changed
 * entry since it was cached (the table's `generation`: a rewritten entry and the Python
 * methods' invalidate() move it), accounts the packet on that record without making an
 * object, looking up the dict or touching the key tuple or the record's reference count
 * (on busy links each of those was a cache miss a packet). Anything else (a new flow, a
 * slot another key took, an older generation, a flow that ended) builds the key tuple and
 * goes table_account's way, then the pair's first slot takes the key. The dict stays the
 * only truth. A flow's end (end_flow) does not move the generation: it lets go of the
 * record in the pairs that hold it (the record names them: cpair), so the other flows'
 * cached entries stay good and an ended flow's record is not kept alive by a slot. The
 * cache grows with the table to 2 slots per table key, at most KEY_CACHE_MAX slots (64
 * bytes each: 2 MiB) per source, taking its cached keys along (size_cache). (Realistic
 * 300k: 1 MiB missed 9,390 frames of known flows, 2 MiB 5,547; 4 MiB cost more in cache
 * misses than it saved: docs/performance.md, flow11.)
 * key_cache() gives (slots, hits, misses). */
#define KEY_CACHE_MIN 1024
#define KEY_CACHE_MAX 32768

struct kslot {
    PyObject *entry;                /* the Record flows[key] was when the table's generation was `gen`, or NULL */
    uint16_t gen;                   /* the generation's low 16 bits (their wrap lets go of every entry) */
    unsigned char len;              /* of raw; 0: an empty slot */
    unsigned char which;            /* the key on that record: 0 R_KEY (direction 0), 1 R_REV_KEY, 2 R_ALIAS */
    unsigned char raw[RAW_KEY_MAX];
};
_Static_assert(sizeof(struct kslot) == 64, "a key cache slot is one cache line");

/* A flow key as bytes, one-to-one with the key tuple frame_batch's arguments make: a byte
 * with 0x80 set when the MAC pair follows (12 bytes), 0x40 for IPv6 addresses, and the
 * number of VLAN ids, each id in 2 bytes, both addresses, the protocol, both ports. Its
 * length, or 0 when the key does not fit this form or a slot (it then takes table_account's
 * way, uncached). */
static int raw_key(unsigned char *raw, const unsigned char *macs, int nvlans, const unsigned *vlans,
                   const unsigned char *src, const unsigned char *dst, Py_ssize_t alen, int proto,
                   unsigned sport, unsigned dport)
{
    if (nvlans < 0 || nvlans > 4 || (alen != 4 && alen != 16) || proto < 0 || proto > 255
            || 1 + (macs ? 12 : 0) + 2 * nvlans + 2 * alen + 5 > RAW_KEY_MAX)
        return 0;
    int n = 0;
    raw[n++] = (unsigned char)((macs ? 0x80 : 0) | (alen == 16 ? 0x40 : 0) | nvlans);
    if (macs) { memcpy(raw + n, macs, 12); n += 12; }
    for (int i = 0; i < nvlans; i++) {
        if (vlans[i] > 0xFFFF) return 0;
        raw[n++] = (unsigned char)(vlans[i] >> 8);
        raw[n++] = (unsigned char)vlans[i];
    }
    if (alen == 4) {        /* (copies of a constant size: inline moves, not a libc call each) */
        memcpy(raw + n, src, 4);
        memcpy(raw + n + 4, dst, 4);
    } else {
        memcpy(raw + n, src, 16);
        memcpy(raw + n + 16, dst, 16);
    }
    n += 2 * (int)alen;
    raw[n++] = (unsigned char)proto;
    raw[n++] = (unsigned char)(sport >> 8); raw[n++] = (unsigned char)sport;
    raw[n++] = (unsigned char)(dport >> 8); raw[n++] = (unsigned char)dport;
    return n;
}

/* A key's slot pair hash. `raw` is a RAW_BUF buffer zeroed past the key's n bytes (a raw_key
 * buffer declared `= {0}`): its last word is read whole, no copy of a variable size. */
#define RAW_BUF (RAW_KEY_MAX + 8)
static uint64_t raw_hash(const unsigned char *raw, int n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, raw + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    memcpy(&w, raw + i, 8);     /* the key's last n - i bytes, then zeros */
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h;
}

static void clear_cache(TableObject *self)
{
    for (Py_ssize_t i = 0; i < self->slots; i++) Py_CLEAR(self->cache[i].entry);
    PyMem_Free(self->cache_mem);
    self->cache = NULL;
    self->cache_mem = NULL;
    self->slots = 0;
    self->last_slot = 0;
}

static inline void note_cached(TableObject *self, RecordObject *rec, Py_ssize_t pair);

/* The cache sized for the table: 0, or -1 with an exception set. */
static int size_cache(TableObject *self)
{
    Py_ssize_t entries = PyDict_GET_SIZE(self->flows), n = self->slots ? self->slots : KEY_CACHE_MIN;
    while (n < KEY_CACHE_MAX && n < 2 * entries) n *= 2;
    if (n == self->slots) return 0;
    void *mem = PyMem_Calloc((size_t)n + 1, sizeof(struct kslot));     /* + 1: room to align */
    if (mem == NULL) { PyErr_NoMemory(); return -1; }
    struct kslot *old = self->cache;
    void *old_mem = self->cache_mem;
    Py_ssize_t old_slots = self->slots;
    self->last_slot = 0;
    self->cache_mem = mem;
    self->cache = (struct kslot *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    self->slots = n;
    /* The cached keys move to their pairs in the larger cache. Dropped, every live flow's next
     * packet missed once after each of the doublings a busy table makes (realistic 100k: 3,617
     * packets of known flows built, hashed and looked up a key tuple; 536 with this). A pair
     * already full keeps the keys it has (the one left out is found in the dict and cached
     * again); keys without an entry are left behind. */
    for (Py_ssize_t i = 0; i < old_slots; i++) {
        struct kslot *from = &old[i];
        if (from->len == 0 || from->entry == NULL) continue;
        unsigned char raw[RAW_BUF] = {0};
        memcpy(raw, from->raw, from->len);
        struct kslot *to = &self->cache[raw_hash(raw, from->len) & (uint64_t)(n - 2)];
        if (to[0].len != 0) to++;
        if (to->len != 0) {
            Py_CLEAR(from->entry);
            continue;
        }
        *to = *from;        /* (the entry's reference moves with it) */
        note_cached(self, (RecordObject *)to->entry, (to - self->cache) & ~(Py_ssize_t)1);
    }
    PyMem_Free(old_mem);
    return 0;
}

/* A key left the table or got another entry: every cached entry is stale (a slot's entry
 * counts only at its generation). Slots keep 16 bits of it: when those wrap, the slots let
 * go of their entries, so an entry 65,536 generations old is never taken for a current one. */
static void bump_generation(TableObject *self)
{
    self->generation++;
    if ((uint16_t)self->generation == 0)
        for (Py_ssize_t i = 0; i < self->slots; i++) Py_CLEAR(self->cache[i].entry);
}

/* Whether slot pair `pair` (an index + 1 as cpair keeps it; 0: none) holds rec. */
static inline int pair_holds(TableObject *self, Py_ssize_t pair1, RecordObject *rec)
{
    Py_ssize_t pair = pair1 - 1;
    return pair >= 0 && pair + 1 < self->slots
           && (self->cache[pair].entry == (PyObject *)rec || self->cache[pair + 1].entry == (PyObject *)rec);
}

/* slot pair `pair` now holds rec: the record names it (see forget_cached), in a place that
 * names no pair or one that no longer holds it (another key took its slot, or the cache was
 * made anew at a new size): a flow is cached under its two directions' keys, so only one
 * with a third key (a MAC-order alias) is cached_many, whose end moves the generation. */
static inline void note_cached(TableObject *self, RecordObject *rec, Py_ssize_t pair)
{
    if (rec->cpair[0] == pair + 1 || rec->cpair[1] == pair + 1) return;
    for (int k = 0; k < 2; k++)
        if (!pair_holds(self, rec->cpair[k], rec)) {
            rec->cpair[k] = pair + 1;
            return;
        }
    rec->cached_many = 1;
}

/* rec leaves the table (end_flow): the cache's slots let go of it. The pairs it names are
 * checked (a pair that holds another record now keeps it); a record cached in more pairs
 * than it names moves the generation instead (every cached entry is checked again). */
static void forget_cached(TableObject *self, RecordObject *rec)
{
    if (rec->cached_many) {
        bump_generation(self);
        return;
    }
    for (int k = 0; k < 2; k++) {
        Py_ssize_t pair = rec->cpair[k] - 1;
        rec->cpair[k] = 0;
        if (pair < 0 || pair + 1 >= self->slots) continue;
        for (int i = 0; i < 2; i++)
            if (self->cache[pair + i].entry == (PyObject *)rec) Py_CLEAR(self->cache[pair + i].entry);
    }
}

/* Slot pair `pair` takes the key `raw` (n bytes) in its first slot (the key there moves to the
 * second), with rec as the entry flows has under it, rec's key `which` (see struct kslot);
 * which -1: none (the slot holds no entry). */
static void cache_put(TableObject *self, Py_ssize_t pair, const unsigned char *raw, int n, RecordObject *rec,
                      int which)
{
    struct kslot *slot = &self->cache[pair], t;
    if (slot[1].len == n && memcmp(slot[1].raw, raw, n) == 0) {
        t = slot[0];
        slot[0] = slot[1];
        slot[1] = t;
    } else if (!(slot[0].len == n && memcmp(slot[0].raw, raw, n) == 0)) {
        Py_XDECREF(slot[1].entry);
        slot[1] = slot[0];
        slot[0].entry = NULL;
        slot[0].len = (unsigned char)n;
        memcpy(slot[0].raw, raw, n);
    }
    Py_CLEAR(slot[0].entry);
    if (which >= 0) {       /* flows[key] is rec now */
        slot[0].entry = Py_NewRef((PyObject *)rec);
        slot[0].gen = (uint16_t)self->generation;
        slot[0].which = (unsigned char)which;
        note_cached(self, rec, pair);
    }
}

/* The key tuple table_account builds from the engine's arguments, from frame_batch's (the
 * addresses as `alen` bytes at src and dst: made into bytes objects here, once per key). */
static PyObject *make_key(long linktype, PyObject *frame, int nvlans, const unsigned *vlans, const unsigned char *src,
                          const unsigned char *dst, Py_ssize_t alen, int proto, unsigned sport, unsigned dport)
{
    PyObject *key = PyTuple_New(8), *o;
    if (key == NULL) return NULL;
    Py_ssize_t flen = PyBytes_GET_SIZE(frame);
    o = linktype == 1 ? PyBytes_FromStringAndSize(PyBytes_AS_STRING(frame), flen < 12 ? flen : 12)
                      : Py_NewRef(empty_bytes);
    if (o == NULL) goto error;
    PyTuple_SET_ITEM(key, 0, o);
    if (!(o = PyTuple_New(nvlans))) goto error;
    PyTuple_SET_ITEM(key, 1, o);
    for (int i = 0; i < nvlans; i++) {
        PyObject *v = PyLong_FromUnsignedLong(vlans[i]);
        if (v == NULL) goto error;
        PyTuple_SET_ITEM(o, i, v);
    }
    PyTuple_SET_ITEM(key, 2, Py_NewRef(empty_tuple));
    if (!(o = PyBytes_FromStringAndSize((const char *)src, alen))) goto error;
    PyTuple_SET_ITEM(key, 3, o);
    if (!(o = PyBytes_FromStringAndSize((const char *)dst, alen))) goto error;
    PyTuple_SET_ITEM(key, 4, o);
    if (!(o = PyLong_FromLong(proto))) goto error;
    PyTuple_SET_ITEM(key, 5, o);
    if (!(o = PyLong_FromUnsignedLong(sport))) goto error;
    PyTuple_SET_ITEM(key, 6, o);
    if (!(o = PyLong_FromUnsignedLong(dport))) goto error;
    PyTuple_SET_ITEM(key, 7, o);
    /* bytes, ints and a tuple of ints: what untracked_key finds out item by item is known here
     * (neither tuple can be part of a cycle) */
    PyObject_GC_UnTrack(PyTuple_GET_ITEM(key, 1));
    PyObject_GC_UnTrack(key);
    return key;
error:
    Py_DECREF(key);
    return NULL;
}

/* Which of rec's keys `key`, found in the dict with direction d, is, for a slot: 0 R_KEY,
 * 1 R_REV_KEY, 2 R_ALIAS; -1 none of them (not cached then), -2 with an exception set. The
 * dict holds a record under those keys only, so direction 0 is R_KEY and direction 1 without
 * an alias R_REV_KEY; only a flow with an alias compares tuples. */
static int key_place(RecordObject *rec, PyObject *key, int d)
{
    if (d == 0) return rec->key != NULL ? 0 : -1;
    if (rec->rev_key == NULL || rec->rev_same) return -1;
    if (rec->alias == NULL || key == rec->rev_key) return 1;
    if (key == rec->alias) return 2;
    int same = PyObject_RichCompareBool(rec->rev_key, key, Py_EQ);
    if (same < 0) return -2;
    if (same) return 1;
    same = PyObject_RichCompareBool(rec->alias, key, Py_EQ);
    return same < 0 ? -2 : same ? 2 : -1;
}

/* table.account(ts, linktype, frame, vlans, src, dst, proto, payload, ()) for frame_batch:
 * linktype an int in 0..65535, frame bytes, the addresses `alen` bytes each at src and dst
 * (bytes objects of them only when a key tuple is made: not per packet). */
static int account_raw(PyObject *table, PyObject *ts, PyObject *lto, PyObject *frame, int nvlans,
                       const unsigned *vlans, const unsigned char *src, const unsigned char *dst, Py_ssize_t alen,
                       int proto, const unsigned char *p, Py_ssize_t plen, PyObject *payload)
{
    TableObject *self = (TableObject *)table;
    long linktype = self->linktype;
    if (lto != self->lto) {     /* one object per capture source: converted once */
        if ((linktype = PyLong_AsLong(lto)) == -1 && PyErr_Occurred()) return -1;
        Py_XSETREF(self->lto, Py_NewRef(lto));
        self->linktype = linktype;
    }
    double tsd;
    if (PyFloat_CheckExact(ts)) tsd = PyFloat_AS_DOUBLE(ts);
    else if (time_of(ts, &tsd) < 0) return -1;
    Py_ssize_t flen = PyBytes_GET_SIZE(frame);
    l4_t l;
    read_l4(proto, p, plen, &l);
    unsigned char raw[RAW_BUF] = {0};     /* (zeros past the key: raw_hash) */
    int n = 0, d = 0;
    if (linktype != 1 || flen >= 12)
        n = raw_key(raw, linktype == 1 ? (const unsigned char *)PyBytes_AS_STRING(frame) : NULL, nvlans, vlans,
                    src, dst, alen, proto, l.sport, l.dport);
    struct kslot *slot = NULL;
    Py_ssize_t pair = 0;
    PyObject *key = NULL;
    self->last_slot = 0;
    Py_hash_t khash = -1;
    long long opened = self->opened;
    RecordObject *rec = NULL;
    if (n) {
        if (size_cache(self) < 0) return -1;
        pair = (Py_ssize_t)(raw_hash(raw, n) & (uint64_t)(self->slots - 2));
        slot = &self->cache[pair];       /* a pair: slot[0], slot[1] */
        for (int i = 0; i < 2; i++)
            if (slot[i].len == n && memcmp(slot[i].raw, raw, n) == 0) {
                if (i == 1) {       /* the pair's last used first */
                    struct kslot t = slot[0];
                    slot[0] = slot[1];
                    slot[1] = t;
                }
                if (slot[0].entry != NULL && slot[0].gen == (uint16_t)self->generation) {
                    /* Nothing left the table since: still its record, borrowed from the slot;
                     * its key is found only if apply calls Python (it holds both then). */
                    self->hits++;
                    self->last_slot = pair + 1;
                    return apply(self, NULL, slot[0].which, (RecordObject *)slot[0].entry, slot[0].which != 0,
                                 ts, tsd, flen, &l, p, plen, payload);
                }
                if (slot[0].entry != NULL) {    /* an older generation's: the key it was cached under */
                    RecordObject *old = (RecordObject *)slot[0].entry;
                    key = Py_XNewRef(slot[0].which == 0 ? old->key : slot[0].which == 1 ? old->rev_key : old->alias);
                    if (key != NULL && slot[0].which < 2 && (khash = key_hash(old, slot[0].which)) == -1) goto error;
                }
                break;
            }
    }
    if (key != NULL && khash == -1 && (khash = PyObject_Hash(key)) == -1) goto error;
    if (key != NULL && !(rec = lookup_known(self, key, khash, &d)) && PyErr_Occurred()) goto error;
    /* the reverse frame's key, as raw_key writes it (MACs swapped, the same VLAN ids, addresses
     * and ports swapped), and its slot pair: a flow this packet opens is cached under it too */
    unsigned char rraw[RAW_BUF] = {0};
    int rn = 0;
    Py_ssize_t rpair = 0;
    if (rec != NULL) {
        self->hits++;       /* found in the dict by the cached key, no tuple made */
    } else {
        self->misses++;
        if (slot != NULL) {
            /* asked for now: the pair is a random line the new flow's entry goes to after
             * find_entry, which takes long enough for it to arrive (cache_put waited on it) */
            unsigned char rmacs[12];
            if (linktype == 1) {
                memcpy(rmacs, PyBytes_AS_STRING(frame) + 6, 6);
                memcpy(rmacs + 6, PyBytes_AS_STRING(frame), 6);
            }
            rn = raw_key(rraw, linktype == 1 ? rmacs : NULL, nvlans, vlans, dst, src, alen, proto, l.dport, l.sport);
            if (rn) {
                rpair = (Py_ssize_t)(raw_hash(rraw, rn) & (uint64_t)(self->slots - 2));
                __builtin_prefetch(&self->cache[rpair], 1, 3);
                __builtin_prefetch(&self->cache[rpair + 1], 1, 3);
            }
        }
        if (key == NULL && !(key = make_key(linktype, frame, nvlans, vlans, src, dst, alen, proto, l.sport, l.dport)))
            return -1;
        opened = self->opened;
        if (!(rec = find_entry(self, key, ts, tsd, payload, p, plen, &d))) goto error;
    }
    if (slot != NULL) {
        int which = key_place(rec, key, d);
        if (which == -2) goto error;
        cache_put(self, pair, raw, n, rec, which);
        if (which >= 0) self->last_slot = pair + 1;
        /* A flow this packet opened: its reverse key is cached too (flows[rev_key] is rec
         * now), so the first answer finds it without making, hashing and looking up a key
         * tuple. */
        if (opened != self->opened && !rec->rev_same && rn && rpair + 1 < self->slots)
            cache_put(self, rpair, rraw, rn, rec, 1);
    }
    if (apply(self, key, 0, rec, d, ts, tsd, flen, &l, p, plen, payload) < 0) goto error;
    Py_DECREF(rec);
    Py_DECREF(key);
    return 0;
error:
    Py_XDECREF(rec);
    Py_XDECREF(key);
    return -1;
}

/* What account_raw will read for a frame, asked for ahead (frame_batch calls this a few frames
 * before it accounts the frame). Accounting a packet reads a random slot pair of the key cache
 * (2 MiB on a busy link) and then the record the slot names: two misses to memory, one after
 * the other, that cost more than the rest of account_raw's work. Here the frame's slot pair is
 * prefetched, and the record of the frame given two calls ago (whose slot pair has had two
 * frames' handling to arrive), so both are in the cache when account_raw gets there. Changes
 * nothing but ahead; reads only the cache and the frame. */
static void prefetch_raw(PyObject *table, PyObject *lto, PyObject *frame, int nvlans, const unsigned *vlans,
                         const unsigned char *src, const unsigned char *dst, Py_ssize_t alen, int proto,
                         const unsigned char *p, Py_ssize_t plen)
{
    TableObject *self = (TableObject *)table;
    struct ahead *older = &self->ahead[self->next_ahead];
    self->next_ahead ^= 1;
    if (older->n && older->pair + 1 < self->slots) {
        const struct kslot *slot = &self->cache[older->pair];
        for (int i = 0; i < 2; i++) {
            uint64_t tail;
            memcpy(&tail, slot[i].raw + older->n - 8, 8);
            if (slot[i].entry != NULL && slot[i].len == older->n && tail == older->tail) {
                const RecordObject *rec = (const RecordObject *)slot[i].entry;
                __builtin_prefetch(&rec->t_none, 1, 3);         /* what apply reads and writes */
                __builtin_prefetch((const char *)rec->t + 3 * sizeof(tslot_t) - 1, 1, 3);
                break;
            }
        }
    }
    older->n = 0;       /* (its place takes this frame's) */
    if (lto != self->lto || self->slots == 0) return;    /* (a new source's first frame: no guess) */
    l4_t l;
    read_l4(proto, p, plen, &l);
    unsigned char raw[RAW_BUF] = {0};
    if (self->linktype == 1 && PyBytes_GET_SIZE(frame) < 12) return;
    int n = raw_key(raw, self->linktype == 1 ? (const unsigned char *)PyBytes_AS_STRING(frame) : NULL, nvlans, vlans,
                    src, dst, alen, proto, l.sport, l.dport);
    if (n == 0) return;
    Py_ssize_t pair = (Py_ssize_t)(raw_hash(raw, n) & (uint64_t)(self->slots - 2));
    __builtin_prefetch(&self->cache[pair], 0, 3);
    __builtin_prefetch(&self->cache[pair + 1], 0, 3);
    older->pair = pair;
    older->n = n;           /* (at least 14: one byte, two IPv4 addresses, protocol, ports) */
    memcpy(&older->tail, raw + n - 8, 8);
}

/* FlowTable._endpoints of a key: (proto, src, sport, dst, dport), ports 0 but for TCP and UDP */
static PyObject *endpoints(PyObject *key)
{
    long long proto;
    if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 8 || !get_ll(PyTuple_GET_ITEM(key, 5), &proto)) {
        PyErr_SetString(PyExc_TypeError, "flow key is not an 8-tuple");
        return NULL;
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) return NULL;
    PyObject *out = untracked(PyTuple_Pack(5, PyTuple_GET_ITEM(key, 5), PyTuple_GET_ITEM(key, 3),
                                 proto == 6 || proto == 17 ? PyTuple_GET_ITEM(key, 6) : zero, PyTuple_GET_ITEM(key, 4),
                                 proto == 6 || proto == 17 ? PyTuple_GET_ITEM(key, 7) : zero));
    Py_DECREF(zero);
    return out;
}

static int add_attr(PyObject *o, PyObject *name, long long delta)
{
    PyObject *v = PyObject_GetAttr(o, name), *d, *n;
    if (v == NULL) return -1;
    d = PyLong_FromLongLong(delta);
    n = d ? PyNumber_Add(v, d) : NULL;
    Py_DECREF(v);
    Py_XDECREF(d);
    if (n == NULL) return -1;
    int rc = PyObject_SetAttr(o, name, n);
    Py_DECREF(n);
    return rc;
}

/* The table entry under `key`, if it is rec's, leaves the table (`hash`: the key's, -1: not known). */
static int drop_entry(PyObject *flows, PyObject *key, PyObject *rec, Py_hash_t hash)
{
    if (hash == -1 && (hash = PyObject_Hash(key)) == -1) return -1;
    PyObject *entry = GET_KNOWN(flows, key, hash);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    if (entry == rec) return DEL_KNOWN(flows, key, hash);
    return 0;
}

/* What a loop over the records (a sweep, the end of input) reads once: reporter.max_flows,
 * and the final reports it made, added to table.final_reports when it stops. */
typedef struct { Py_ssize_t max_flows; long long finals; int as_text; } ending_t;

static int start_ending(TableObject *self, ending_t *e)
{
    e->max_flows = self->reporter->max_flows;
    e->finals = 0;
    e->as_text = as_text_of(self->reporter);
    return e->as_text < 0 ? -1 : 0;
}

/* table.final_reports += the loop's count; keeps an exception already set. */
static int stop_ending(TableObject *self, ending_t *e)
{
    if (e->finals == 0) return 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = add_attr(self->table, str_final_reports, e->finals);
    e->finals = 0;
    if (type != NULL) {
        if (rc < 0) PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return rc;
}

/* FlowTable._end: the final report, then the flow leaves the table and its id is kept in
 * `ended` (the oldest forgotten when it holds max_flows). Tables of other types than
 * FlowTable makes take the Python method. */
static int forget_flow(TableObject *self, ending_t *e, RecordObject *r, PyObject *report_ts);

static int end_flow(TableObject *self, ending_t *e, RecordObject *r, PyObject *reason, PyObject *report_ts)
{
    PyObject *res, *rec = (PyObject *)r;
    if (!PyDict_CheckExact(self->by_endpoints) || !PyDict_Check(self->ended)) {
        PyObject *args[3] = {rec, reason, report_ts};
        res = PyObject_Vectorcall(self->end, args, 3, NULL);
        if (res == NULL) return -1;
        Py_DECREF(res);
        return 0;
    }
    /* what forget_flow reads after the report: the keys' and endpoints' objects, made when the
     * flow opened and long out of the cache (their reference counts change) */
    if (r->key) __builtin_prefetch(r->key, 1, 3);
    if (r->rev_key) __builtin_prefetch(r->rev_key, 1, 3);
    if (r->ends) __builtin_prefetch(r->ends, 1, 3);
    if (report(self->reporter, e->as_text, self->source, rec, 1, reason, report_ts) < 0) return -1;
    e->finals++;
    return forget_flow(self, e, r, report_ts);
}

/* end_flow after the final report: the flow leaves `flows`, the key cache, the open order and
 * by_endpoints, and its id goes into `ended` (by_endpoints and ended: dicts, end_flow checked). */
static int forget_flow(TableObject *self, ending_t *e, RecordObject *r, PyObject *report_ts)
{
    PyObject *res, *rec = (PyObject *)r;
    if (r->key == NULL || r->rev_key == NULL) {
        PyErr_SetString(PyExc_TypeError, "flow record without its keys");
        return -1;
    }
    PyObject *key = Py_NewRef(r->key), *rev_key = Py_NewRef(r->rev_key), *alias = r->alias ? Py_NewRef(r->alias) : NULL;
    forget_cached(self, r);     /* the key cache lets go of it */
    int in_step = PyDict_GET_SIZE(self->flows) == self->known_size;
    int failed = drop_entry(self->flows, key, rec, key_hash(r, 0)) < 0
                 || drop_entry(self->flows, rev_key, rec, key_hash(r, 1)) < 0
                 || (alias != NULL && drop_entry(self->flows, alias, rec, -1) < 0);
    if (in_step) self->known_size = PyDict_GET_SIZE(self->flows);
    if (!failed) order_unlink(self, r);
    Py_DECREF(rev_key);
    Py_XDECREF(alias);
    if (failed) {
        Py_DECREF(key);
        return -1;
    }
    int known = r->ends != NULL;
    PyObject *ends = known ? Py_NewRef(r->ends) : endpoints(key), *value = NULL;
    Py_DECREF(key);
    if (ends == NULL) return -1;
    int rc = -1;
    Py_hash_t hash = known ? r->ends_hash : PyObject_Hash(ends);
    if (hash == -1) goto done;
    PyObject *cur = GET_KNOWN(self->by_endpoints, ends, hash);
    if (cur == NULL && PyErr_Occurred()) goto done;
    if (cur == rec && DEL_KNOWN(self->by_endpoints, ends, hash) < 0) goto done;
    int present = CONTAINS_KNOWN(self->ended, ends, hash);     /* re-inserted last: end order */
    if (present < 0 || (present && PyObject_DelItem(self->ended, ends) < 0)) goto done;
    if (PyDict_GET_SIZE(self->ended) >= e->max_flows) {  /* ended.popitem(last=False) */
        PyObject *args[2] = {self->ended, Py_False}, *names = PyTuple_Pack(1, str_last);
        if (names == NULL) goto done;
        res = PyObject_VectorcallMethod(str_popitem, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, names);
        Py_DECREF(names);
        if (res == NULL) goto done;
        Py_DECREF(res);
        if (add_attr(self->table, str_ended_forgotten, 1) < 0) goto done;
    }
    value = untracked(PyTuple_Pack(2, r->id ? r->id : Py_None, report_ts));
    if (value == NULL || PyObject_SetItem(self->ended, ends, value) < 0) goto done;
    rc = 0;
done:
    Py_XDECREF(value);
    Py_DECREF(ends);
    return rc;
}

/* FlowTable._evict: the idlest of the first EVICTION_WINDOW records of the open order that
 * `flows` holds under their own key ends with reason `evicted` (the first of equals: min's
 * choice); records `flows` no longer holds so (another flow's key took their entry) leave the
 * order when met. None: nothing ends. 0, or -1 with an exception. */
static int evict(TableObject *self)
{
    RecordObject *window[EVICTION_WINDOW], *r = self->oldest;
    int n = 0, rc = -1;
    Py_XINCREF(r);
    while (r != NULL && n < EVICTION_WINDOW) {
        RecordObject *next = r->newer;
        Py_XINCREF(next);       /* (held: comparing keys may run Python code) */
        PyObject *found = NULL;
        if (r->key != NULL) {
            Py_hash_t hash = key_hash(r, 0);
            found = hash == -1 ? NULL : GET_KNOWN(self->flows, r->key, hash);
            if (found == NULL && PyErr_Occurred()) {
                Py_DECREF(r);
                Py_XDECREF(next);
                goto done;
            }
        }
        if (found == (PyObject *)r) {
            window[n++] = r;        /* (held) */
        } else {
            order_unlink(self, r);
            Py_DECREF(r);
        }
        r = next;
    }
    Py_XDECREF(r);
    if (n == 0) {       /* only records another flow's key took (not from captured frames) */
        rc = 0;
        goto done;
    }
    RecordObject *victim = window[0];
    for (int i = 1; i < n; i++)
        if (window[i]->ts[1] < victim->ts[1]) victim = window[i];
    ending_t e;
    PyObject *last = NULL;
    if (start_ending(self, &e) < 0 || !(last = PyFloat_FromDouble(victim->ts[1]))) goto done;
    rc = end_flow(self, &e, victim, str_evicted, last);
    Py_DECREF(last);
    if (stop_ending(self, &e) < 0) rc = -1;
    if (rc == 0) rc = add_attr(self->table, str_evicted, 1);
done:
    for (int i = 0; i < n; i++) Py_DECREF(window[i]);
    return rc;
}

/* The records (direction 0 entries) as a new list: ends delete from the dict. */
static PyObject *records_of(TableObject *self)
{
    PyObject *records = PyList_New(0), *k, *v;
    if (records == NULL) return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->flows, &pos, &k, &v)) {
        if (!IS_RECORD(v)) {
            PyErr_SetString(PyExc_TypeError, "flow table entry is not a Record");
            Py_DECREF(records);
            return NULL;
        }
        int d = direction_on((RecordObject *)v, k);
        if (d < 0 || (d == 0 && PyList_Append(records, v) < 0)) { Py_DECREF(records); return NULL; }
    }
    return records;
}

/* FlowTable.finish's loop: every flow's final report at its last packet's time, reason the
 * one FIN/RST gave it or end_of_input; reports handed over together. */
static PyObject *table_finish_records(TableObject *self, PyObject *unused)
{
    ending_t e;
    if (start_ending(self, &e) < 0) return NULL;
    PyObject *records = records_of(self);
    if (records == NULL) return NULL;
    int was_collecting = self->reporter->pending != NULL, rc = 0;
    if (start_collecting(self->reporter) < 0) { Py_DECREF(records); return NULL; }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records) && rc == 0; i++) {
        RecordObject *rec = (RecordObject *)PyList_GET_ITEM(records, i);
        int closed_true = rec->closed == NULL ? 0 : PyObject_IsTrue(rec->closed);
        if (closed_true < 0) { rc = -1; break; }
        PyObject *reason = closed_true ? rec->closed : str_end_of_input, *last = PyFloat_FromDouble(rec->ts[1]);
        if (last == NULL) { rc = -1; break; }
        Py_INCREF(reason);
        rc = end_flow(self, &e, rec, reason, last);
        Py_DECREF(reason);
        Py_DECREF(last);
    }
    Py_DECREF(records);
    if (stop_ending(self, &e) < 0) rc = -1;
    if (!was_collecting && stop_collecting(self->reporter) < 0) rc = -1;
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* The reason a sweep ends rec for (borrowed; NULL: it lives on), 0; -1 with an exception. */
static int sweep_reason(RecordObject *rec, double idle_before, double closed_before, PyObject **reason)
{
    PyObject *closed = rec->closed;
    double last = rec->ts[1];
    *reason = NULL;
    if (last <= idle_before) {
        int closed_true = closed == NULL ? 0 : PyObject_IsTrue(closed);
        if (closed_true < 0) return -1;
        *reason = closed_true ? closed : str_idle;
    } else if (closed != NULL && last <= closed_before) {
        *reason = closed;
    }
    return 0;
}

/* One record of a sweep: it ends (end_flow) or is reported when due; 0 or -1. */
static int sweep_one(TableObject *self, ending_t *e, RecordObject *rec, PyObject *now, int report_due,
                     int report_all, double period_ago, double idle_before, double closed_before,
                     Py_ssize_t *reports)
{
    PyObject *reason;
    int rc = sweep_reason(rec, idle_before, closed_before, &reason);
    if (rc == 0 && reason != NULL) {
        Py_INCREF(reason);
        rc = end_flow(self, e, rec, reason, now);
        Py_DECREF(reason);
    } else if (rc == 0 && report_due && (report_all || (rec->ts[0] <= period_ago && period_ago <= rec->ts[1]))) {
        rc = report(self->reporter, e->as_text, self->source, (PyObject *)rec, 0, Py_None, now);
        *reports += rc == 0;
    }
    return rc;
}

/* FlowTable.sweep's loop, records as the Python path lists them (records_of); for tables whose
 * by_endpoints or ended are of other types (end_flow takes the Python _end). */
static Py_ssize_t sweep_listed(TableObject *self, ending_t *e, PyObject *now, int report_due, int report_all,
                               double period_ago, double idle_before, double closed_before)
{
    PyObject *records = records_of(self);
    if (records == NULL) return -1;
    Py_ssize_t reports = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        RecordObject *rec = (RecordObject *)PyList_GET_ITEM(records, i);
        if (sweep_one(self, e, rec, now, report_due, report_all, period_ago, idle_before, closed_before,
                      &reports) < 0) {
            Py_DECREF(records);
            return -1;
        }
    }
    Py_DECREF(records);
    return reports;
}

/* Asks for what a sweep reads of a record: all its lines (the object header's reference
 * count, the closing reason and report caches, the times and counts, the TCP part). A hint:
 * never read through, so a record freed in the meantime costs nothing. */
static inline void prefetch_record(const RecordObject *r)
{
    const char *p = (const char *)r;
    for (size_t at = 0; at < sizeof(RecordObject) + T_SIZE * sizeof(tslot_t); at += 64)
        __builtin_prefetch(p + at, 1, 3);
}

/* ... and its report's cached text (rec->text: the parts make_parts wrote, read whole by each
 * report), for a record already in the cache. Its first TEXT_LINES lines, without reading it
 * (its type or size: a load that would wait for memory here): the parts of an IPv4 flow take
 * 7-8 lines, an IPv6 one's a few more (the rest comes in as the report reads it). */
#define TEXT_LINES 8
static inline void prefetch_text(const RecordObject *r)
{
    const char *p = (const char *)r->text;
    if (p == NULL) return;
    for (int i = 0; i < TEXT_LINES; i++) __builtin_prefetch(p + 64 * i, 0, 3);
}

/* FlowTable.sweep's loop over the open order, while it is exact (see order_exact): the records
 * `flows` holds under their own key, in its order, without reading the dict's entries. The
 * order is a linked list of records long out of the cache: each step asks for the record two
 * ahead and the text of the next (whose lines the step before asked for), so a report's work
 * hides the misses instead of each record's first read waiting for memory (the list gives the
 * address of a record only once the one before it is read). */
static Py_ssize_t sweep_order(TableObject *self, ending_t *e, PyObject *now, int report_due, int report_all,
                              double period_ago, double idle_before, double closed_before)
{
    unsigned long long breaks = self->order_breaks;
    Py_ssize_t reports = 0;
    RecordObject *rec = self->oldest;
    Py_XINCREF(rec);
    if (rec != NULL && rec->newer != NULL) prefetch_record(rec->newer);
    while (rec != NULL) {
        RecordObject *next = rec->newer;        /* (an end unlinks rec) */
        if (next != NULL) {
            if (next->newer != NULL) prefetch_record(next->newer);
            prefetch_text(next);
        }
        Py_XINCREF(next);
        int rc = sweep_one(self, e, rec, now, report_due, report_all, period_ago, idle_before, closed_before,
                           &reports);
        Py_DECREF(rec);
        if (rc == 0 && (self->order_breaks != breaks || PyDict_GET_SIZE(self->flows) != self->known_size)) {
            PyErr_SetString(PyExc_RuntimeError, "the flow table changed during its sweep");
            rc = -1;
        }
        if (rc < 0) {
            Py_XDECREF(next);
            return -1;
        }
        rec = next;
    }
    return reports;
}

/* FlowTable.sweep's loop in one walk over `flows`, when the open order may not be exact: each
 * record (its direction 0 entry) is read once, while its lines are in the cache (a list of the
 * records first, then the loop over it, then the list's end read every live record three
 * times: on a table larger than the cache, three misses each); the same records in the same
 * order. Ending a flow deletes its entries from the dict being walked: a deletion empties an
 * entry in place (the dict's entries keep their order and places until an insertion resizes
 * them, and PyDict_Next passes over empty ones), so the walk goes on as over a list made first.
 * Anything else changing `flows` in the walk (an insertion: new entries, maybe moved) fails the
 * sweep rather than skip a flow. The walk also checks the open order against `flows`: when they
 * agree, order_exact is set again. */
static Py_ssize_t sweep_walk(TableObject *self, ending_t *e, PyObject *now, int report_due, int report_all,
                             double period_ago, double idle_before, double closed_before)
{
    PyDictObject *flows = (PyDictObject *)self->flows;
    void *entries = flows->ma_keys;
    Py_ssize_t reports = 0, pos = 0, used = PyDict_GET_SIZE(flows);
    unsigned long long breaks = self->order_breaks;
    RecordObject *cursor = self->oldest;    /* the open order's record the next one should be */
    int agree = 1;
    PyObject *k, *v;
    while (PyDict_Next((PyObject *)flows, &pos, &k, &v)) {
        if (!IS_RECORD(v)) {
            PyErr_SetString(PyExc_TypeError, "flow table entry is not a Record");
            return -1;
        }
        RecordObject *rec = (RecordObject *)v;
        int d = direction_on(rec, k);
        if (d != 0) {
            if (d < 0) return -1;
            continue;
        }
        if (agree && self->order_breaks == breaks && cursor == rec)
            cursor = rec->newer;
        else
            agree = 0;
        Py_INCREF(rec);         /* (held: a report may run Python code, an end deletes its entries) */
        int rc = sweep_one(self, e, rec, now, report_due, report_all, period_ago, idle_before, closed_before,
                           &reports);
        Py_DECREF(rec);
        if (rc < 0) return -1;
        if ((void *)flows->ma_keys != entries || PyDict_GET_SIZE(flows) > used) {
            PyErr_SetString(PyExc_RuntimeError, "flows were added to the table during its sweep");
            return -1;
        }
        used = PyDict_GET_SIZE(flows);
    }
    if (agree && cursor == NULL && self->order_breaks == breaks) {
        self->order_exact = 1;
        self->known_size = PyDict_GET_SIZE(flows);
    }
    return reports;
}

static PyObject *table_sweep_records(TableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "sweep_records(now, report_due, report_all, period_ago, idle_before, closed_before)");
        return NULL;
    }
    PyObject *now = args[0];
    int report_due = PyObject_IsTrue(args[1]), report_all = PyObject_IsTrue(args[2]);
    double period_ago = PyFloat_AsDouble(args[3]), idle_before = PyFloat_AsDouble(args[4]),
           closed_before = PyFloat_AsDouble(args[5]);
    if (report_due < 0 || report_all < 0 || PyErr_Occurred()) return NULL;
    ending_t e;
    if (start_ending(self, &e) < 0) return NULL;
    int was_collecting = self->reporter->pending != NULL;
    if (start_collecting(self->reporter) < 0) return NULL;
    Py_ssize_t reports = !(PyDict_CheckExact(self->flows) && PyDict_CheckExact(self->by_endpoints) && PyDict_Check(self->ended))
        ? sweep_listed(self, &e, now, report_due, report_all, period_ago, idle_before, closed_before)
        : self->order_exact && PyDict_GET_SIZE(self->flows) == self->known_size
        ? sweep_order(self, &e, now, report_due, report_all, period_ago, idle_before, closed_before)
        : sweep_walk(self, &e, now, report_due, report_all, period_ago, idle_before, closed_before);
    int failed = reports < 0;
    if (stop_ending(self, &e) < 0) failed = 1;
    if (!was_collecting && stop_collecting(self->reporter) < 0) failed = 1;
    return failed ? NULL : PyLong_FromSsize_t(reports);
}

/* wirebeat.ip.ip_packed(text) (a new reference): socket.inet_pton of the text's family (AF_INET6
 * when it holds a ':'), which is libc's inet_pton, called here for ASCII text without a NUL; any
 * other object, and text inet_pton refuses, goes to that Python function (it raises the error). */
static PyObject *packed_ip(TableObject *self, PyObject *text)
{
    if (PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text) && PyUnicode_GET_LENGTH(text) < 64) {
        char buf[64];
        unsigned char out[16];
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        memcpy(buf, PyUnicode_DATA(text), (size_t)n);
        buf[n] = '\0';
        int len = ip_pack(buf, (size_t)n, out);
        if (len > 0) return PyBytes_FromStringAndSize((const char *)out, len);
    }
    return PyObject_CallOneArg(self->ip_packed, text);
}

/* The record whose packet account_raw accounted last (borrowed: its key cache slot holds it),
 * NULL when not known. Most transactions end with a packet of their own flow. */
static RecordObject *last_record(TableObject *self)
{
    Py_ssize_t i = self->last_slot - 1;
    if (i < 0 || i >= self->slots) return NULL;
    PyObject *entry = self->cache[i].entry;
    return entry != NULL && IS_RECORD(entry) ? (RecordObject *)entry : NULL;
}

/* by_endpoints / ended .get((proto, a, ap, b, bp)) or .get((proto, b, bp, a, ap)): a new
 * reference, NULL when neither (an exception set when the lookup failed). */
static PyObject *either_way(PyObject *dict, PyObject *proto, PyObject *a, PyObject *ap, PyObject *b, PyObject *bp)
{
    for (int way = 0; way < 2; way++) {
        PyObject *key = way == 0 ? PyTuple_Pack(5, proto, a, ap, b, bp) : PyTuple_Pack(5, proto, b, bp, a, ap);
        if (key == NULL) return NULL;
        PyObject *found = PyDict_GetItemWithError(dict, key);
        Py_DECREF(key);
        if (found == NULL && PyErr_Occurred()) return NULL;
        if (found != NULL) {
            Py_INCREF(found);
            if (way == 1) return found;
            int truth = PyObject_IsTrue(found);     /* Python's `or` */
            if (truth) {
                if (truth < 0) Py_CLEAR(found);
                return found;
            }
            Py_DECREF(found);
        }
    }
    return NULL;
}

/* flows.py's _IANA.get(transport): 6, 17, 1, 58; 0 for other text; -1 for what is not exact str */
static int iana_of(PyObject *transport)
{
    if (!PyUnicode_CheckExact(transport)) return -1;
    if (!PyUnicode_IS_ASCII(transport)) return 0;
    const char *t = (const char *)PyUnicode_DATA(transport);
    switch (PyUnicode_GET_LENGTH(transport)) {
    case 3: return memcmp(t, "tcp", 3) == 0 ? 6 : memcmp(t, "udp", 3) == 0 ? 17 : 0;
    case 4: return memcmp(t, "icmp", 4) == 0 ? 1 : 0;
    case 9: return memcmp(t, "ipv6-icmp", 9) == 0 ? 58 : 0;
    }
    return 0;
}

/* rec[R_ID] or assign_id(source, rec): flow_id_python's answer for a live record (new reference) */
static PyObject *id_of_record(TableObject *self, RecordObject *rec)
{
    PyObject *fid = rec->id ? rec->id : Py_None;
    int truth = PyObject_IsTrue(fid);
    if (truth < 0) return NULL;
    return truth ? Py_NewRef(fid) : flow_id(self->reporter, self->source, rec);
}

/* Where a FlowKey's fields lie (a slotted dataclass): read from its slots, not through
 * PyObject_GetAttr (~160 instructions each, five a transaction). Worked out for the first key
 * of a type and again for another type or a changed one (its version tag); a type whose fields
 * are not all plain slots is not read here. */
static const char *const KEY_FIELDS[5] = {"transport", "client_ip", "client_port", "server_ip", "server_port"};
static struct { PyTypeObject *type; unsigned int version; int plain; Py_ssize_t offsets[5]; } key_slots;

/* The FlowKey's five fields, borrowed (the key holds them), into v: 1; 0 when not read here */
static int key_fields(PyObject *flow, PyObject *v[5])
{
    PyTypeObject *type = Py_TYPE(flow);
    if (type != key_slots.type || type->tp_version_tag != key_slots.version || !key_slots.version) {
        key_slots.type = NULL;
        key_slots.plain = 1;
        for (int i = 0; i < 5; i++) {
            PyObject *name = PyUnicode_InternFromString(KEY_FIELDS[i]);
            if (name == NULL) { PyErr_Clear(); return 0; }
            PyObject *d = _PyType_Lookup(type, name);       /* borrowed; gives the type a version tag */
            Py_DECREF(name);
            if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
                    || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX)
                key_slots.plain = 0;
            else
                key_slots.offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        }
        if (!(type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) return 0;
        key_slots.type = type;
        key_slots.version = type->tp_version_tag;
    }
    if (!key_slots.plain) return 0;
    for (int i = 0; i < 5; i++)
        if (!(v[i] = *(PyObject **)((char *)flow + key_slots.offsets[i]))) return 0;
    return 1;
}

/* Whether address text packs (as packed_ip packs it) to the bytes object `addr`. Plain dotted
 * decimal is read in place (what dotted_pack takes, ip_pack packs to the same bytes). */
static int packs_to(PyObject *text, PyObject *addr)
{
    Py_ssize_t n = PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text) ? PyUnicode_GET_LENGTH(text) : 64;
    if (n >= 64 || !PyBytes_CheckExact(addr)) return 0;
    char buf[64];
    unsigned char out[16];
    if (PyBytes_GET_SIZE(addr) == 4 && dotted_pack(PyUnicode_DATA(text), (size_t)n, out))
        return memcmp(out, PyBytes_AS_STRING(addr), 4) == 0;
    memcpy(buf, PyUnicode_DATA(text), (size_t)n);
    buf[n] = '\0';
    int len = ip_pack(buf, (size_t)n, out);
    return len > 0 && len == PyBytes_GET_SIZE(addr) && memcmp(out, PyBytes_AS_STRING(addr), (size_t)len) == 0;
}

/* flow.id of a transaction whose flow is the flow of the packet accounted last (most
 * transactions end with a packet of their own flow; the accounting already found its record):
 * that record's, when it is exactly what flow_id_python's lookups would find. The transaction's
 * endpoints packed are the record's endpoints (rec->ends, by_endpoints' own key) one way or the
 * other, by_endpoints still names that record for them (not a newer flow between the same
 * endpoints, on another VLAN say, nor none: the flow ended), and, the other way round, names
 * no flow (flow_id_python looks that way up first). A new reference; NULL without an
 * exception: not known here (the caller looks it up); NULL with one: a lookup failed. `v`: the
 * transaction's FlowKey's fields (key_fields). */
static PyObject *id_of_last(TableObject *self, PyObject *const v[5], int proto)
{
    RecordObject *last = last_record(self);
    PyObject *ends = last != NULL ? last->ends : NULL;
    if (ends == NULL || !PyTuple_CheckExact(ends) || PyTuple_GET_SIZE(ends) != 5) return NULL;
    PyObject *const *e = &PyTuple_GET_ITEM(ends, 0);
    long long ep, cp = 0, sp = 0, p1, p2;
    if (!get_ll(e[0], &ep) || ep != proto || !get_ll(e[2], &p1) || !get_ll(e[4], &p2)) return NULL;
    if ((proto == 6 || proto == 17) && (!get_ll(v[2], &cp) || !get_ll(v[4], &sp))) return NULL;
    int way;            /* 0: the client is the record's source, 1: its destination */
    if (cp == p1 && sp == p2 && packs_to(v[1], e[1]) && packs_to(v[3], e[3]))
        way = 0;
    else if (cp == p2 && sp == p1 && packs_to(v[1], e[3]) && packs_to(v[3], e[1]))
        way = 1;
    else
        return NULL;
    PyObject *named = GET_KNOWN(self->by_endpoints, ends, last->ends_hash);
    if (named != (PyObject *)last) return NULL;     /* (NULL with an exception: raised, as the lookup's) */
    if (way == 1) {     /* flow_id_python's first lookup: the reverse of rec->ends */
        PyObject *rev = PyTuple_Pack(5, e[0], e[3], e[4], e[1], e[2]);
        if (rev == NULL) return NULL;
        PyObject *other = PyDict_GetItemWithError(self->by_endpoints, rev);
        Py_DECREF(rev);
        if (other != NULL && other != (PyObject *)last) return NULL;
        if (PyErr_Occurred()) return NULL;
    }
    self->ids_of_last++;
    return id_of_record(self, last);
}

/* FlowTable.flow_id_python in C: flow.id of the flow a transaction (its FlowKey) belongs to,
 * the live one, else one that ended; None. Transports of other types go to Python. */
static PyObject *table_flow_id(TableObject *self, PyObject *flow)
{
    PyObject *v[5];
    int proto, plain = key_fields(flow, v);
    if (plain) {
        proto = iana_of(v[0]);
    } else {
        PyObject *transport = PyObject_GetAttr(flow, str_transport);
        if (transport == NULL) return NULL;
        proto = iana_of(transport);
        Py_DECREF(transport);
    }
    if (proto < 0 || !PyDict_CheckExact(self->by_endpoints) || !PyDict_Check(self->ended))
        return PyObject_CallOneArg(self->flow_id_python, flow);
    if (proto == 0) Py_RETURN_NONE;
    PyObject *fast = plain ? id_of_last(self, v, proto) : NULL;
    if (fast != NULL || PyErr_Occurred()) return fast;
    self->ids_looked_up++;
    PyObject *client = NULL, *server = NULL, *cport = NULL, *sport = NULL, *proto_o = NULL, *out = NULL;
    PyObject *client_text = NULL, *server_text = NULL;
    if (!(client_text = PyObject_GetAttr(flow, str_client_ip)) || !(server_text = PyObject_GetAttr(flow, str_server_ip)))
        goto done;
    if (proto == 6 || proto == 17) {
        if (!(cport = PyObject_GetAttr(flow, str_client_port)) || !(sport = PyObject_GetAttr(flow, str_server_port)))
            goto done;
    } else {
        cport = Py_NewRef(small_int[1]);
        sport = Py_NewRef(small_int[1]);
    }
    if (!(client = packed_ip(self, client_text)) || !(server = packed_ip(self, server_text))) goto done;
    if (!(proto_o = PyLong_FromLong(proto))) goto done;
    PyObject *rec = either_way(self->by_endpoints, proto_o, client, cport, server, sport);
    if (rec != NULL) {
        if (!IS_RECORD(rec))
            PyErr_SetString(PyExc_TypeError, "flow record is not a Record");
        else
            out = id_of_record(self, (RecordObject *)rec);
        Py_DECREF(rec);
        goto done;
    }
    if (PyErr_Occurred()) goto done;
    PyObject *gone = PyDict_GET_SIZE(self->ended) ? either_way(self->ended, proto_o, client, cport, server, sport)
                                                   : NULL;
    if (gone != NULL) {
        out = PySequence_GetItem(gone, 0);
        Py_DECREF(gone);
    } else if (!PyErr_Occurred()) {
        out = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(client); Py_XDECREF(server); Py_XDECREF(cport); Py_XDECREF(sport); Py_XDECREF(proto_o);
    Py_XDECREF(client_text); Py_XDECREF(server_text);
    return out;
}

static PyObject *get_attr_s(PyObject *o, const char *name)
{
    return PyObject_GetAttrString(o, name);
}

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *table, *reporter, *account_python, *flow_id_python, *ip_packed;
    if (!PyArg_ParseTuple(args, "OO!OOO:Table", &table, &ReporterType, &reporter, &account_python, &flow_id_python,
                          &ip_packed))
        return NULL;
    TableObject *self = (TableObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)table_account;
    self->table = Py_NewRef(table);
    self->reporter = (ReporterObject *)Py_NewRef(reporter);
    self->account_python = Py_NewRef(account_python);
    self->flow_id_python = Py_NewRef(flow_id_python);
    self->ip_packed = Py_NewRef(ip_packed);
    if (!(self->flows = get_attr_s(table, "flows")) || !(self->alias = get_attr_s(table, "_alias"))
            || !(self->open = get_attr_s(table, "_open")) || !(self->control = get_attr_s(table, "_control"))
            || !(self->end = get_attr_s(table, "_end")) || !(self->source = get_attr_s(table, "source"))
            || !(self->by_endpoints = get_attr_s(table, "by_endpoints")) || !(self->ended = get_attr_s(table, "ended"))) {
        Py_DECREF(self);
        return NULL;
    }
    if (!PyDict_CheckExact(self->flows)) {
        PyErr_SetString(PyExc_TypeError, "Table: table.flows must be a dict");
        Py_DECREF(self);
        return NULL;
    }
    self->order_exact = PyDict_GET_SIZE(self->flows) == 0;
    self->known_size = PyDict_GET_SIZE(self->flows);
    /* `ended` (an OrderedDict: tracked from birth, as every dict subclass's instance is) holds
     * only tuples end_flow makes untracked, of bytes, numbers and str: it cannot be part of a
     * cycle, and each collection that walked it read every entry's objects (a cache miss each, up
     * to max_flows of them). It leaves the collector's lists while empty, as a plain dict would
     * stay out of them; inserting anything the collector tracks puts it back (dict insertion). */
    if (PyDict_Check(self->ended) && PyDict_GET_SIZE(self->ended) == 0 && PyObject_GC_IsTracked(self->ended))
        PyObject_GC_UnTrack(self->ended);
    return (PyObject *)self;
}

static int table_traverse(TableObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->table); Py_VISIT(self->flows); Py_VISIT(self->alias); Py_VISIT(self->open);
    Py_VISIT(self->control); Py_VISIT(self->end); Py_VISIT(self->account_python); Py_VISIT(self->source);
    Py_VISIT(self->reporter); Py_VISIT(self->by_endpoints); Py_VISIT(self->ended);
    Py_VISIT(self->flow_id_python); Py_VISIT(self->ip_packed);
    return 0;
}

static int table_clear(TableObject *self)
{
    Py_CLEAR(self->table); Py_CLEAR(self->flows); Py_CLEAR(self->alias); Py_CLEAR(self->open);
    Py_CLEAR(self->control); Py_CLEAR(self->end); Py_CLEAR(self->account_python); Py_CLEAR(self->source);
    Py_CLEAR(self->reporter); Py_CLEAR(self->by_endpoints); Py_CLEAR(self->ended);
    Py_CLEAR(self->flow_id_python); Py_CLEAR(self->ip_packed);
    Py_CLEAR(self->lto);
    while (self->oldest != NULL) order_unlink(self, self->oldest);     /* the order lets go of its records */
    clear_cache(self);
    return 0;
}

static void table_dealloc(TableObject *self)
{
    PyObject_GC_UnTrack(self);
    table_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *table_invalidate(TableObject *self, PyObject *unused)
{
    bump_generation(self);
    order_unsure(self);
    Py_RETURN_NONE;
}

/* FlowTable.counters' table figures: (records, entries of a MAC-order alias's direction,
 * flows opened here: the Python methods count theirs in table.opened) */
static PyObject *table_census(TableObject *self, PyObject *unused)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0, records = 0, aliases = 0;
    while (PyDict_Next(self->flows, &pos, &k, &v)) {
        if (!IS_RECORD(v)) {
            PyErr_SetString(PyExc_TypeError, "flow table entry is not a Record");
            return NULL;
        }
        int d = direction_on((RecordObject *)v, k);
        if (d < 0) return NULL;
        records += d == 0;
        aliases += d == 1 && ((RecordObject *)v)->alias != NULL;
    }
    return Py_BuildValue("(nnL)", records, aliases, self->opened);
}

static PyObject *table_link(TableObject *self, PyObject *rec)
{
    if (!IS_RECORD(rec)) {
        PyErr_SetString(PyExc_TypeError, "link(rec): a flow Record");
        return NULL;
    }
    order_link(self, (RecordObject *)rec);
    order_unsure(self);
    Py_RETURN_NONE;
}

static PyObject *table_unlink(TableObject *self, PyObject *rec)
{
    if (IS_RECORD(rec)) order_unlink(self, (RecordObject *)rec);
    order_unsure(self);
    Py_RETURN_NONE;
}

static PyObject *table_evict(TableObject *self, PyObject *unused)
{
    if (evict(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *table_order(TableObject *self, PyObject *unused)
{
    PyObject *out = PyList_New(0);
    for (RecordObject *r = self->oldest; r != NULL && out != NULL; r = r->newer)
        if (PyList_Append(out, (PyObject *)r) < 0) Py_CLEAR(out);
    return out;
}

static PyObject *table_key_cache(TableObject *self, PyObject *unused)
{
    return Py_BuildValue("(nKK)", self->slots, self->hits, self->misses);
}

static PyObject *table_flow_ids(TableObject *self, PyObject *unused)
{
    return Py_BuildValue("(KK)", self->ids_of_last, self->ids_looked_up);
}

static PyMethodDef table_methods[] = {
    {"invalidate", (PyCFunction)table_invalidate, METH_NOARGS,
     "invalidate(): a key left FlowTable.flows or got another entry (the Python methods call it)"},
    {"census", (PyCFunction)table_census, METH_NOARGS,
     "census() -> (records, alias entries): FlowTable.counters' table figures, in C"},
    {"link", (PyCFunction)table_link, METH_O,
     "link(rec): rec joins the open order as its newest (order[id(rec)] = rec; in it already: stays)"},
    {"unlink", (PyCFunction)table_unlink, METH_O,
     "unlink(rec): rec leaves the open order if in it (order.pop(id(rec), None))"},
    {"evict", (PyCFunction)table_evict, METH_NOARGS,
     "evict(): FlowTable._evict, in C (the table is full: the idlest of the oldest flows ends)"},
    {"order", (PyCFunction)table_order, METH_NOARGS,
     "order() -> the records of the open order, oldest first (list(FlowTable.order.values()))"},
    {"key_cache", (PyCFunction)table_key_cache, METH_NOARGS,
     "key_cache() -> (slots, hits, misses) of the key cache frame_batch's frames use"},
    {"flow_ids", (PyCFunction)table_flow_ids, METH_NOARGS,
     "flow_ids() -> (of the last packet's flow, looked up): how flow_id found transactions' flow.id"},
    {"sweep_records", (PyCFunction)(void (*)(void))table_sweep_records, METH_FASTCALL,
     "sweep_records(now, report_due, report_all, period_ago, idle_before, closed_before) -> periodic reports"},
    {"flow_id", (PyCFunction)table_flow_id, METH_O,
     "flow_id(flow_key) -> flow.id or None: FlowTable.flow_id_python"},
    {"finish_records", (PyCFunction)table_finish_records, METH_NOARGS,
     "finish_records(): FlowTable.finish's loop (every flow's final report)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._flowcore.Table",
    .tp_doc = "Table(table, reporter_core, account_python, flow_id_python, ip_packed): called as "
              "FlowTable.account(...)",
    .tp_basicsize = sizeof(TableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(TableObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = table_new,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
};

/* ---- module ------------------------------------------------------------------ */

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wirebeat._flowcore",
                                    "Optional C core of the flow table (see beat/_flowcore.c).", -1, NULL};

PyMODINIT_FUNC PyInit__flowcore(void)
{
    if (PyType_Ready(&ReporterType) < 0 || PyType_Ready(&TableType) < 0 || PyType_Ready(&RecordType) < 0
            || PyType_Ready(&TcpViewType) < 0)
        return NULL;
    str_idle = PyUnicode_InternFromString("idle");
    str_as_text = PyUnicode_InternFromString("as_text");
    str_publish = PyUnicode_InternFromString("publish");
    str_publish_many = PyUnicode_InternFromString("publish_many");
    str_builder = PyUnicode_InternFromString("builder");
    str_direction = PyUnicode_InternFromString("direction");
    str_of_packed = PyUnicode_InternFromString("of_packed");
    str_max_flows = PyUnicode_InternFromString("max_flows");
    str_final_reports = PyUnicode_InternFromString("final_reports");
    str_end_of_input = PyUnicode_InternFromString("end_of_input");
    str_last = PyUnicode_InternFromString("last");
    str_popitem = PyUnicode_InternFromString("popitem");
    str_values = PyUnicode_InternFromString("values");
    str_evicted = PyUnicode_InternFromString("evicted");
    str_ended_forgotten = PyUnicode_InternFromString("ended_forgotten");
    str_transport = PyUnicode_InternFromString("transport");
    str_fin = PyUnicode_InternFromString("fin");
    str_rst = PyUnicode_InternFromString("rst");
    str_client_ip = PyUnicode_InternFromString("client_ip");
    str_server_ip = PyUnicode_InternFromString("server_ip");
    str_client_port = PyUnicode_InternFromString("client_port");
    str_server_port = PyUnicode_InternFromString("server_port");
    for (int i = 0; i < DIRECTION_N; i++)
        if (!(verdicts[i] = PyUnicode_InternFromString(DIRECTION_WORDS[i]))) return NULL;
    if (!(str__kind = PyUnicode_InternFromString("_kind"))) return NULL;
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    empty_tuple = PyTuple_New(0);
    for (int i = 0; i < 3; i++)
        if (!(small_int[i] = PyLong_FromLong(i - 1))) return NULL;
    if (!str_builder || !str_direction || !str_of_packed || !str_idle || !str_as_text || !str_publish || !str_publish_many || !str_max_flows || !str_final_reports || !str_end_of_input || !str_last || !str_popitem || !str_values || !str_evicted || !str_ended_forgotten || !str_fin || !str_rst || !str_transport || !str_client_ip || !str_server_ip || !str_client_port || !str_server_port || !empty_bytes || !empty_tuple) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *names = Py_BuildValue("(iiiiiiiiiiiiiiiii)(iiiiiiiiiiiii)",
        R_FIRST_TS, R_LAST_TS, R_PACKETS, R_PACKETS_REV, R_BYTES, R_BYTES_REV, R_KEY, R_REV_KEY,
        R_REPORTS, R_CLOSED, R_TCP, R_ID, R_ICMP, R_ALIAS, R_STATIC, R_TEXT, R_BODY,
        T_HIGH, T_HIGH_REV, T_RETRANS, T_RETRANS_REV, T_SYN, T_FIN, T_RST, T_FIN_DIRS,
        T_SYN_TS, T_SYN_DIR, T_SYNACK_TS, T_ACK_TS, T_AWAIT_ACK_DIR);
    if (names == NULL || PyModule_AddObject(m, "LAYOUT", names) < 0) { Py_XDECREF(names); Py_DECREF(m); return NULL; }
    if (PyModule_AddIntConstant(m, "EVICTION_WINDOW", EVICTION_WINDOW) < 0) { Py_DECREF(m); return NULL; }
    Py_INCREF(&ReporterType);
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Reporter", (PyObject *)&ReporterType) < 0
            || PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0
            || PyModule_AddObject(m, "Record", Py_NewRef((PyObject *)&RecordType)) < 0
            || PyModule_AddObject(m, "TcpView", Py_NewRef((PyObject *)&TcpViewType)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    static flowcore_api_t api = {&TableType, account_raw, prefetch_raw};
    PyObject *capsule = PyCapsule_New(&api, FLOWCORE_API_NAME, NULL);
    if (capsule == NULL || PyModule_AddObject(m, FLOWCORE_API_ATTR, capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
