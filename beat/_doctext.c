/* wirebeat._doctext: the common part of a transaction document's JSON text, in C.

   `assemble` writes what DocumentBuilder._assemble_python (beat/document.py) writes,
   byte for byte: @timestamp, type, status, event, network, the four endpoints and
   related of one transaction, the capture/agent/ecs text, flow.id, error, the
   decoder's own fields and the tail, and the document's _id (BLAKE2b of the same
   key, beat/_blake2b.h), the ISO times (beat/_isotime.h), the Community ID from the
   address text (beat/_cid.h), the MAC text and network.direction (from the ranges of
   beat/direction.py, when they are all CIDRs). Python still works out the parts that
   need Python (protocol stack, the decoder's fields as JSON) and passes them in.

   Anything unusual returns None and the caller uses the Python function: a value
   that is not exactly a str / int / float where one is expected, text that is not
   valid UTF-8 (lone surrogates), an integer past 64 bits, a time before 1970 or past
   year 2223, an address text inet_pton does not read, a port past 16 bits. tests/beat/test_doctext_c.py runs both on the same arguments. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include "_blake2b.h"
#include "_cid.h"
#include "_isotime.h"
#include "_iptext.h"      /* ip_pack(): address text packed */
#include "_direction.h"   /* direction_verdict(): network.direction */
#include "_jsontext.h"    /* Buf, put(), put_json() ... */

/* Status of a failed step: -1 a Python error to raise (memory), -2 "use the Python path". */
#define FALLBACK JSON_FALLBACK

/* The n bytes written at `at` once more (after a grow: the copy is taken from the buffer
 * as it is then). */
static int put_again(Buf *b, Py_ssize_t at, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, b->data + at, n);
    b->len += n;
    return 0;
}

/* Python's round(x) of a finite float, as a 64-bit integer (half to even, like nearbyint). */
static int round_ll(double x, long long *v) {
    if (!isfinite(x)) return FALLBACK;
    double r = nearbyint(x);
    if (!(r > -9.2e18 && r < 9.2e18)) return FALLBACK;
    *v = (long long)r;
    return 0;
}

static PyObject *S_flow, *S_ts, *S_end_ts, *S_status, *S_request_bytes, *S_response_bytes,
    *S_identity, *S_transport, *S_client_ip, *S_client_port, *S_server_ip, *S_server_port, *S_source;

#define N_ARGS 14
#define N_ATTRS 13

/* decoders/api.py iso_time for 0 <= ts < 8e9 (27 characters); FALLBACK for other times
   (the Python function takes them). */
static int iso_text(double ts, char out[27]) {
    static long long cached_second = -1;
    static char cached_text[19];
    if (!(ts >= 0.0 && ts < 8e9)) return FALLBACK;
    double secf = floor(ts);
    long long seconds = (long long)secf;
    long long micros = (long long)nearbyint((ts - secf) * 1e6);
    if (micros >= 1000000) { seconds += 1; micros -= 1000000; }
    if (seconds != cached_second) {
        second_text(seconds, cached_text);
        cached_second = seconds;
    }
    memcpy(out, cached_text, 19);
    out[19] = '.';
    for (int i = 25; i >= 20; i--) { out[i] = (char)('0' + micros % 10); micros /= 10; }
    out[26] = 'Z';
    return 0;
}

/* An address's text packed (inet_pton, as socket.inet_pton reads it); FALLBACK when it is none. */
static int pack_address(const char *s, Py_ssize_t n, int v6, unsigned char out[16]) {
    return ip_pack(s, (size_t)n, out) == (v6 ? 16 : 4) ? 0 : FALLBACK;
}

/* format_mac (decoders/api.py): upper-case hex pairs joined by hyphens; FALLBACK unless bytes. */
static int put_mac(Buf *b, PyObject *o) {
    static const char hex[] = "0123456789ABCDEF";
    if (!PyBytes_CheckExact(o)) return FALLBACK;
    const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(o);
    Py_ssize_t n = PyBytes_GET_SIZE(o);
    if (buf_grow(b, n * 3) < 0) return -1;
    char *out = b->data + b->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) *out++ = '-';
        *out++ = hex[m[i] >> 4];
        *out++ = hex[m[i] & 15];
    }
    b->len = out - b->data;
    return 0;
}

/* The document into `b` and its _id into `id`; 0, or -1 (error) / FALLBACK. */
static int build(Buf *b, char id[20], PyObject *const *args, PyObject **attr) {
    PyObject *name = args[1], *protocol = args[2], *stack = args[3], *direction = args[4],
             *macs = args[5], *event_head = args[6], *related = args[7], *appends = args[8],
             *flow_id = args[9], *error = args[10], *own = args[11], *common = args[12], *tail = args[13];
    PyObject *ts_o = attr[0], *end_ts_o = attr[1], *status = attr[2], *req_o = attr[3],
             *resp_o = attr[4], *identity = attr[5], *transport = attr[6], *client_ip = attr[7],
             *cport_o = attr[8], *server_ip = attr[9], *sport_o = attr[10], *source = attr[11];
    int rc;
#define TRY(expr) do { if ((rc = (expr)) != 0) return rc; } while (0)
    if (!PyFloat_CheckExact(ts_o) || !(end_ts_o == Py_None || PyFloat_CheckExact(end_ts_o)))
        return FALLBACK;
    double ts = PyFloat_AS_DOUBLE(ts_o);
    long long cport, sport, req = 0, resp = 0, ts_us;
    TRY(as_ll(cport_o, &cport));
    TRY(as_ll(sport_o, &sport));
    int has_req = req_o != Py_None, has_resp = resp_o != Py_None;
    if (has_req) TRY(as_ll(req_o, &req));
    if (has_resp) TRY(as_ll(resp_o, &resp));
    TRY(round_ll(ts * 1e6, &ts_us));
    if (macs != Py_None && !(PyTuple_CheckExact(macs) && PyTuple_GET_SIZE(macs) == 2)) return FALLBACK;
    if (appends != Py_None && !(PyTuple_CheckExact(appends) && PyTuple_GET_SIZE(appends) == 5))
        return FALLBACK;
    if ((error != Py_None && !PyBytes_CheckExact(error)) || (own != Py_None && !PyBytes_CheckExact(own)))
        return FALLBACK;
    if (!PyUnicode_CheckExact(client_ip) || !PyUnicode_CheckExact(server_ip)
        || !PyUnicode_CheckExact(transport))
        return FALLBACK;
    int v6 = PyUnicode_FindChar(client_ip, ':', 0, PyUnicode_GET_LENGTH(client_ip), 1) >= 0;
    int same = PyUnicode_Compare(client_ip, server_ip) == 0;
    if (PyErr_Occurred()) { PyErr_Clear(); return FALLBACK; }
    const char *tname;
    Py_ssize_t tlen;
    TRY(utf8(transport, &tname, &tlen));
    int with_ports = (tlen == 3 && (memcmp(tname, "tcp", 3) == 0 || memcmp(tname, "udp", 3) == 0));
    /* @timestamp and event.end: iso_time of ts and end_ts */
    char start[27], end[27];
    TRY(iso_text(ts, start));
    if (end_ts_o != Py_None) TRY(iso_text(PyFloat_AS_DOUBLE(end_ts_o), end));
    /* network.community_id: document.py's _IANA transports only */
    int proto = tlen == 3 && memcmp(tname, "tcp", 3) == 0 ? 6
                : tlen == 3 && memcmp(tname, "udp", 3) == 0 ? 17
                : tlen == 4 && memcmp(tname, "icmp", 4) == 0 ? 1
                : tlen == 9 && memcmp(tname, "ipv6-icmp", 9) == 0 ? 58 : 0;
    char cid[30];
    const char *verdict = NULL;       /* network.direction worked out here (a ranges tuple) */
    int direction_here = PyTuple_CheckExact(direction);
    if (proto || direction_here) {
        const char *cs, *ss;
        Py_ssize_t cn, sn;
        unsigned char caddr[16], saddr[16];
        TRY(utf8(client_ip, &cs, &cn));
        TRY(utf8(server_ip, &ss, &sn));
        TRY(pack_address(cs, cn, v6, caddr));
        TRY(pack_address(ss, sn, v6, saddr));
        if (proto) {
            if (cport < 0 || cport > 65535 || sport < 0 || sport > 65535) return FALLBACK;
            community_id(proto, caddr, saddr, v6 ? 16 : 4, (int)cport, (int)sport, cid);
        }
        if (direction_here) {
            int v = direction_verdict(direction, caddr, saddr, v6 ? 16 : 4);
            if (v < 0) return FALLBACK;
            verdict = DIRECTION_WORDS[v];
        }
    }

    /* the header */
    TRY(PUTS(b, "{\"@timestamp\":\""));
    TRY(put(b, start, 27));
    TRY(PUTS(b, "\",\"type\":"));
    TRY(put_json(b, name));
    TRY(PUTS(b, ",\"status\":"));
    TRY(put_json(b, status));
    /* event: the head, then the times */
    TRY(PUTS(b, ",\"event\":"));
    TRY(put_raw(b, event_head));
    if (!has_req && has_resp && end_ts_o == Py_None) {
        TRY(PUTS(b, "\"end\":\""));
        TRY(put(b, start, 27));
        TRY(PUTS(b, "\"}"));
    } else {
        TRY(PUTS(b, "\"start\":\""));
        TRY(put(b, start, 27));
        if (end_ts_o != Py_None) {
            double end_ts = PyFloat_AS_DOUBLE(end_ts_o);
            TRY(PUTS(b, "\",\"end\":\""));
            TRY(put(b, end, 27));
            if (end_ts >= ts) {
                long long us;
                TRY(round_ll((end_ts - ts) * 1e6, &us));
                if (us > 9000000000000000LL || us < -9000000000000000LL) return FALLBACK;
                TRY(PUTS(b, "\",\"duration\":"));
                TRY(put_ll(b, us * 1000));
                TRY(PUTS(b, "}"));
            } else {
                TRY(PUTS(b, "\"}"));
            }
        } else {
            TRY(PUTS(b, "\"}"));
        }
    }
    /* network */
    TRY(PUTS(b, ",\"network\":{\"transport\":"));
    TRY(put_json(b, transport));
    TRY(v6 ? PUTS(b, ",\"type\":\"ipv6\"") : PUTS(b, ",\"type\":\"ipv4\""));
    if (!PyUnicode_CheckExact(protocol)) return FALLBACK;
    if (PyUnicode_GET_LENGTH(protocol)) {
        TRY(PUTS(b, ",\"protocol\":"));
        TRY(put_json(b, protocol));
    }
    if (proto) {
        TRY(PUTS(b, ",\"community_id\":\""));
        TRY(put(b, cid, 30));
        TRY(PUTS(b, "\""));
    }
    if (!PyUnicode_CheckExact(stack)) return FALLBACK;
    if (PyUnicode_GET_LENGTH(stack)) {
        TRY(PUTS(b, ",\"protocol_stack\":"));
        TRY(put_json(b, stack));
    }
    if (verdict != NULL) {
        TRY(PUTS(b, ",\"direction\":\""));
        TRY(put(b, verdict, (Py_ssize_t)strlen(verdict)));
        TRY(PUTS(b, "\""));
    } else if (direction != Py_None) {
        TRY(PUTS(b, ",\"direction\":\""));
        TRY(put_raw(b, direction));
        TRY(PUTS(b, "\""));
    }
    if (has_req || has_resp) {
        if ((req > 0 && resp > LLONG_MAX - req) || (req < 0 && resp < LLONG_MIN - req)) return FALLBACK;
        TRY(PUTS(b, ",\"bytes\":"));
        TRY(put_ll(b, req + resp));
    }
    if (appends != Py_None) TRY(put_raw(b, PyTuple_GET_ITEM(appends, 0)));
    TRY(PUTS(b, "}"));
    /* source, destination, client, server: the client's side twice, the server's twice.
     * client and server are source's and destination's text again (up to their appends):
     * copied from where those were written, as are the addresses of related.ip. */
    static const char *names[4] = {",\"source\":{\"ip\":", ",\"destination\":{\"ip\":",
                                   ",\"client\":{\"ip\":", ",\"server\":{\"ip\":"};
    Py_ssize_t side_at[2] = {0, 0}, side_len[2] = {0, 0}, ip_len[2] = {0, 0};  /* source's, destination's text */
    for (int i = 0; i < 4; i++) {
        int client_side = (i % 2) == 0;
        TRY(put(b, names[i], (Py_ssize_t)strlen(names[i])));
        if (i >= 2) {
            TRY(put_again(b, side_at[i - 2], side_len[i - 2]));
            if (appends != Py_None) TRY(put_raw(b, PyTuple_GET_ITEM(appends, i + 1)));
            TRY(PUTS(b, "}"));
            continue;
        }
        side_at[i] = b->len;
        TRY(put_json(b, client_side ? client_ip : server_ip));
        ip_len[i] = b->len - side_at[i];
        if (with_ports) {
            TRY(PUTS(b, ",\"port\":"));
            TRY(put_ll(b, client_side ? cport : sport));
        }
        if (client_side ? has_req : has_resp) {
            TRY(PUTS(b, ",\"bytes\":"));
            TRY(put_ll(b, client_side ? req : resp));
        }
        if (macs != Py_None) {
            TRY(PUTS(b, ",\"mac\":\""));
            TRY(put_mac(b, PyTuple_GET_ITEM(macs, client_side ? 0 : 1)));
            TRY(PUTS(b, "\""));
        }
        side_len[i] = b->len - side_at[i];
        if (appends != Py_None) TRY(put_raw(b, PyTuple_GET_ITEM(appends, i + 1)));
        TRY(PUTS(b, "}"));
    }
    /* related, then capture, agent and ecs */
    TRY(PUTS(b, ",\"related\":"));
    if (related != Py_None) {
        TRY(put_raw(b, related));
    } else {
        TRY(PUTS(b, "{\"ip\":["));
        TRY(put_again(b, side_at[0], ip_len[0]));
        if (!same) {
            TRY(PUTS(b, ","));
            TRY(put_again(b, side_at[1], ip_len[1]));
        }
        TRY(PUTS(b, "]}"));
    }
    TRY(put_raw(b, common));
    if (flow_id != Py_None) {
        TRY(PUTS(b, ",\"flow\":{\"id\":"));
        TRY(put_json(b, flow_id));
        TRY(PUTS(b, "}"));
    }
    if (error != Py_None) TRY(put(b, PyBytes_AS_STRING(error), PyBytes_GET_SIZE(error)));
    if (own != Py_None && PyBytes_GET_SIZE(own) > 2) {
        TRY(PUTS(b, ","));
        TRY(put(b, PyBytes_AS_STRING(own) + 1, PyBytes_GET_SIZE(own) - 2));
    }
    TRY(put_raw(b, tail));

    /* the _id: BLAKE2b-120 of "<source>|<name>|<transport>|<client>|<port>|<server>|<port>|<us>|<identity>" */
    Buf key;
    buf_init(&key);
    const char *src;
    Py_ssize_t src_len;
    rc = utf8(source, &src, &src_len);
    if (rc == 0) {
        for (Py_ssize_t i = src_len; i-- > 0;)
            if (src[i] == '\0') { src_len = i; break; }       /* a collector's client: its name only */
        if ((rc = put(&key, src, src_len)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_raw(&key, name)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put(&key, tname, tlen)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_raw(&key, client_ip)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_ll(&key, cport)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_raw(&key, server_ip)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_ll(&key, sport)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_ll(&key, ts_us)) == 0 && (rc = PUTS(&key, "|")) == 0
            && (rc = put_raw(&key, identity)) == 0) {
            uint8_t digest[15];
            blake2b((const uint8_t *)key.data, (size_t)key.len, digest, 15);
            id_text(digest, id);
        }
    }
    buf_free(&key);
    return rc;
#undef TRY
}

/* Where the attributes assemble reads lie in a Transaction and a FlowKey (slotted
   dataclasses): read from the slot, not through PyObject_GetAttr (~160 instructions
   each, 13 per document). Worked out for the first object of a type, and again when
   another type comes or the type was changed (its version tag); a name that is not a
   plain slot of the type, or an empty slot, goes through PyObject_GetAttr. */
typedef struct {
    PyTypeObject *type;         /* borrowed: compared, never dereferenced unless it is the object's */
    unsigned int version;
    Py_ssize_t offsets[7];      /* -1: not a plain slot */
} slots_t;

static slots_t txn_slots, flow_slots;

static PyObject *read_attr(slots_t *c, PyObject *o, int i, PyObject **names, int n) {
    PyTypeObject *type = Py_TYPE(o);
    if (type != c->type || type->tp_version_tag != c->version || !c->version) {
        c->type = NULL;
        for (int k = 0; k < n; k++) {
            c->offsets[k] = -1;
            PyObject *d = _PyType_Lookup(type, names[k]);       /* borrowed; assigns the version tag */
            if (d && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
                PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
                if (m->type == T_OBJECT_EX) c->offsets[k] = m->offset;
            }
        }
        if (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
            c->type = type;
            c->version = type->tp_version_tag;
        }
    }
    if (c->offsets[i] >= 0) {
        PyObject *v = *(PyObject **)((char *)o + c->offsets[i]);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, names[i]);
}

PyDoc_STRVAR(assemble_doc,
"assemble(txn, name, protocol, stack, direction, macs, event_head, related, appends,\n"
"         flow_id, error, own, common, tail) -> (id, JSON bytes) | None\n\n"
"`direction`: network.direction's text, None, or NetworkDirection.packed_ranges to work it\n"
"out here from the addresses.\n"
"DocumentBuilder._assemble_python in C (beat/document.py); None: use that function.");

static PyObject *assemble(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != N_ARGS) {
        PyErr_Format(PyExc_TypeError, "assemble() takes %d arguments (%zd given)", N_ARGS, nargs);
        return NULL;
    }
    PyObject *attr[N_ATTRS] = {NULL};
    PyObject *names[7] = {S_ts, S_end_ts, S_status, S_request_bytes, S_response_bytes, S_identity, S_flow};
    PyObject *flow_names[6] = {S_transport, S_client_ip, S_client_port, S_server_ip, S_server_port, S_source};
    PyObject *result = NULL, *flow = NULL;
    int rc = 0;
    for (int i = 0; i < 6 && rc == 0; i++)
        if ((attr[i] = read_attr(&txn_slots, args[0], i, names, 7)) == NULL) rc = -1;
    if (rc == 0 && (flow = read_attr(&txn_slots, args[0], 6, names, 7)) == NULL) rc = -1;
    for (int i = 0; i < 6 && rc == 0; i++)
        if ((attr[6 + i] = read_attr(&flow_slots, flow, i, flow_names, 6)) == NULL) rc = -1;
    if (rc < 0) {       /* no such attribute: the Python path says what is wrong */
        PyErr_Clear();
        rc = FALLBACK;
    }
    Buf b;
    buf_init(&b);
    char id[20];
    if (rc == 0) rc = build(&b, id, args, attr);
    if (rc == 0) {
        PyObject *id_obj = PyUnicode_FromStringAndSize(id, 20);
        PyObject *text = id_obj ? PyBytes_FromStringAndSize(b.data, b.len) : NULL;
        if (text != NULL) result = PyTuple_Pack(2, id_obj, text);
        Py_XDECREF(id_obj);
        Py_XDECREF(text);
    } else if (rc == FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    buf_free(&b);
    Py_XDECREF(flow);
    for (int i = 0; i < N_ATTRS; i++) Py_XDECREF(attr[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"assemble", (PyCFunction)(void (*)(void))assemble, METH_FASTCALL, assemble_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wirebeat._doctext",
    "Transaction documents' common JSON text in C (see beat/document.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__doctext(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_flow, "flow"); INTERN(S_ts, "ts"); INTERN(S_end_ts, "end_ts");
    INTERN(S_status, "status"); INTERN(S_request_bytes, "request_bytes");
    INTERN(S_response_bytes, "response_bytes"); INTERN(S_identity, "identity");
    INTERN(S_transport, "transport"); INTERN(S_client_ip, "client_ip");
    INTERN(S_client_port, "client_port"); INTERN(S_server_ip, "server_ip");
    INTERN(S_server_port, "server_port"); INTERN(S_source, "source");
#undef INTERN
    return PyModule_Create(&module);
}
