/* wirebeat._speedups: optional C accelerator for the per-packet path.
 *
 * Plain CPython C API (no Cython: one file, no build dependency beyond a C
 * compiler and the Python headers). Everything here has a pure-Python twin
 * that stays the reference: beat/packets.py (PacketDocuments, _flow_key),
 * beat/link.py (locate_network), beat/stack.py (link_layers) and
 * beat/document.py (community_id_packed). tests/beat/test_speedups.py proves
 * both paths write byte-identical documents; WIREBEAT_PURE_PYTHON=1 turns
 * this module off.
 *
 * Every read of frame bytes is bounds-checked against the captured length.
 * What this code does not cover (tunnels to peel, MPLS/PPPoE shims, frames
 * the link layer rejects, times outside 1970..2255) makes it return None, and
 * the caller takes the pure-Python path for that frame.
 *
 * Entry points:
 *   header_walk(linktype, data) -> None | (ethertype, net_offset, vlans,
 *       proto, src, dst, transport_offset)
 *     The link / VLAN / IP header walk. None when the link layer rejects the
 *     frame (locate_network would return a reason string). ethertype,
 *     net_offset and vlans (tuple of VLAN ids, outer first) are what
 *     locate_network returns. For IPv4/IPv6 with a whole fixed header: proto
 *     is the IP protocol (IPv6: the first next-header, no extension walk), -1
 *     for an IPv4 fragment or a bad IHL; src/dst are the packed addresses;
 *     transport_offset is where the transport header starts (it may be past
 *     the captured bytes). Otherwise proto is -1, src/dst are None and
 *     transport_offset is 0.
 *   packet_doc(ts, linktype, data, capture_json, id_prefix, n, ctx)
 *       -> None | (doc_id, json_bytes)
 *     The whole per-packet document as PacketDocuments' general path builds
 *     it and orjson serialises it. ctx = (tunnels, port_table, app_names,
 *     event_json, tail_json): port_table is 65536 bytes, an index into
 *     app_names (0: no decoder layer) per UDP port; tail_json is
 *     `"agent":{...},"ecs":{...}` as orjson writes it.
 *   locate_ip(linktype, data) -> reason | (ethertype, net_offset, vlans, parsed)
 *     beat/framecore.py's locate_ip_python: locate_network, then parse_ipv4 /
 *     parse_ipv6 (beat/ip.py) for an IPv4/IPv6 ethertype (parsed None for
 *     any other), with their exact tuples and reason strings.
 *   pcap_records(buf, pos, little, scale, max_caplen, frac_max, linktype, max_count)
 *       -> ([(ts, linktype, data, wire_len)], pos, last_sec)
 *     beat/sources/pcapfile.py's pcap_records_python: the classic pcap
 *     records whole in buf[pos:], stopping before a damaged record header.
 *   Dedup(window, max_packets): beat/dedup.py's Dedup (duplicate, counters).
 *   packet_batch(batch, start, limit, until_ts, capture_json, id_prefix, n, ctx, dedup,
 *                source, fragment, out) -> (stop, bytes, tcp_untracked)
 *     Engine.on_batch's frames (beat/packets.py packets_only_batches): from
 *     batch[start], at most `limit` frames, each plain IP frame's packet_doc
 *     document appended to `out` as (_id, fragment(json)), its duplicate check
 *     and counters; stops at the first frame Engine.on_frame must take. Its
 *     reference is that per-frame path (tests/beat/test_packets_batch.py).
 *   frame_batch(batch, source, engine, state, on_frame, ctx) -> None
 *     Engine.on_batch with flows and decoders (beat/frameloop.py): the whole
 *     batch, the bookkeeping of frames no decoder needs done here, every other
 *     frame handed to on_frame in order. Its reference is on_frame for every
 *     frame (tests/beat/test_frameloop.py).
 * The Python twins of these three are tested against them in
 * tests/beat/test_framecore.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#define LT_NULL 0
#define LT_ETHERNET 1
#define LT_RAW 101
#define LT_LOOP 108
#define LT_SLL 113
#define LT_SLL2 276
#define LT_IPV4 228
#define LT_IPV6 229
#define ET_IPV4 0x0800
#define ET_IPV6 0x86DD
#define ET_ARP 0x0806
#define MAX_VLAN_TAGS 4

static inline unsigned u16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }
static inline int is_tpid(unsigned t) { return t == 0x8100 || t == 0x88A8 || t == 0x9100 || t == 0x9200; }
static inline int is_shim(unsigned t) { return t == 0x8847 || t == 0x8848 || t == 0x8864; }

#include "_cid.h"     /* sha1_short(), community_id() */
#include "_isotime.h" /* second_text() */
#include "_iptext.h"  /* ip_text() */

/* ---- the header walk ----------------------------------------------------- */

typedef struct {
    unsigned ethertype;
    Py_ssize_t net;             /* offset of the network header */
    int nvlans;
    unsigned vlans[MAX_VLAN_TAGS];
    int ip;                     /* 4 or 6 when the fixed IP header is whole, else 0 */
    int proto;                  /* IP protocol, -1 for an IPv4 fragment or bad IHL */
    Py_ssize_t addr;            /* offset of the source address; the destination follows */
    int alen;                   /* 4 or 16 */
    Py_ssize_t transport;       /* offset of the transport header */
} walk_t;

/* locate_network: 1 when located, 0 when it would return a reason string. */
static int locate(int linktype, const unsigned char *d, Py_ssize_t len, walk_t *w)
{
    w->nvlans = 0;
    w->ip = 0;
    w->proto = -1;
    w->transport = 0;
    switch (linktype) {
    case LT_ETHERNET: {
        if (len < 14) return 0;
        unsigned et = u16(d + 12);
        Py_ssize_t off = 14;
        while (is_tpid(et)) {
            if (w->nvlans == MAX_VLAN_TAGS || len < off + 4) return 0;
            w->vlans[w->nvlans++] = u16(d + off) & 0x0FFF;
            et = u16(d + off + 2);
            off += 4;
        }
        w->ethertype = et; w->net = off;
        return 1;
    }
    case LT_SLL:
        if (len < 16) return 0;
        w->ethertype = u16(d + 14); w->net = 16;
        return 1;
    case LT_SLL2:
        if (len < 20) return 0;
        w->ethertype = u16(d); w->net = 20;
        return 1;
    case LT_RAW: case LT_IPV4: case LT_IPV6: case 12: case 14: {
        if (len < 1) return 0;
        int version = d[0] >> 4;
        w->ethertype = version == 4 ? ET_IPV4 : version == 6 ? ET_IPV6 : 0;
        w->net = 0;
        return 1;
    }
    case LT_NULL: case LT_LOOP: {
        if (len < 4) return 0;
        uint32_t fam;
        uint32_t be = ((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3];
        if (linktype == LT_LOOP) fam = be;
        else {
            fam = ((uint32_t)d[3] << 24) | ((uint32_t)d[2] << 16) | ((uint32_t)d[1] << 8) | d[0];
            if (fam > 0xFFFF) fam = be;
        }
        w->ethertype = fam == 2 ? ET_IPV4 : (fam == 10 || fam == 24 || fam == 28 || fam == 30) ? ET_IPV6 : 0;
        w->net = 4;
        return 1;
    }
    }
    return 0;
}

/* packets.py's _flow_key on the located network header. */
static void walk_ip(const unsigned char *d, Py_ssize_t len, walk_t *w)
{
    Py_ssize_t off = w->net;
    if (w->ethertype == ET_IPV6) {
        if (len < off + 40) return;
        w->ip = 6; w->proto = d[off + 6]; w->addr = off + 8; w->alen = 16; w->transport = off + 40;
    } else if (w->ethertype == ET_IPV4) {
        if (len < off + 20) return;
        w->ip = 4; w->proto = d[off + 9]; w->addr = off + 12; w->alen = 4;
        w->transport = off + (d[off] & 0x0F) * 4;
        if ((u16(d + off + 6) & 0x3FFF) || w->transport < off + 20) w->proto = -1;
    }
}

/* The (linktype, data) arguments of header_walk and locate_ip; 0 with an exception set. */
static int frame_args(PyObject *const *args, Py_ssize_t nargs, const char *usage, int *linktype,
                      const unsigned char **d, Py_ssize_t *len)
{
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    *linktype = (int)PyLong_AsLong(args[0]);
    if (*linktype == -1 && PyErr_Occurred()) return 0;
    *d = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    *len = PyBytes_GET_SIZE(args[1]);
    return 1;
}

static PyObject *header_walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int linktype;
    const unsigned char *d;
    Py_ssize_t len;
    if (!frame_args(args, nargs, "header_walk(linktype: int, data: bytes)", &linktype, &d, &len))
        return NULL;
    walk_t w;
    if (!locate(linktype, d, len, &w)) Py_RETURN_NONE;
    walk_ip(d, len, &w);
    PyObject *vlans = PyTuple_New(w.nvlans);
    if (!vlans) return NULL;
    for (int i = 0; i < w.nvlans; i++) PyTuple_SET_ITEM(vlans, i, PyLong_FromLong(w.vlans[i]));
    if (!w.ip)
        return Py_BuildValue("(InNiOOn)", w.ethertype, w.net, vlans, -1, Py_None, Py_None, (Py_ssize_t)0);
    return Py_BuildValue("(InNiy#y#n)", w.ethertype, w.net, vlans, w.proto, d + w.addr, (Py_ssize_t)w.alen,
                         d + w.addr + w.alen, (Py_ssize_t)w.alen, w.transport);
}

/* ---- locate_ip: link layer + IPv4/IPv6 header in one call ------------------ */
/* beat/framecore.py's locate_ip_python is the reference: locate_network, then
 * parse_ipv4 / parse_ipv6 at the located offset, with their exact tuples and
 * reason strings. */

static PyObject *R_LINK_TRUNCATED, *R_LINK_UNSUPPORTED, *R_LINK_VLAN_DEEP,
    *R_IP_TRUNCATED, *R_IP_BAD_VERSION, *R_IP_BAD_HLEN, *R_IP_TOO_MANY_EXT;

/* locate() with the reason string locate_network would return (a borrowed reference). */
static PyObject *locate_reason(int linktype, const unsigned char *d, Py_ssize_t len)
{
    switch (linktype) {
    case LT_ETHERNET: {
        if (len < 14) return R_LINK_TRUNCATED;
        unsigned et = u16(d + 12);
        Py_ssize_t off = 14;
        int n = 0;
        while (is_tpid(et)) {
            if (n == MAX_VLAN_TAGS) return R_LINK_VLAN_DEEP;
            if (len < off + 4) return R_LINK_TRUNCATED;
            n++;
            et = u16(d + off + 2);
            off += 4;
        }
        return NULL;
    }
    case LT_SLL: case LT_SLL2: case LT_RAW: case LT_IPV4: case LT_IPV6: case 12: case 14:
    case LT_NULL: case LT_LOOP:
        return R_LINK_TRUNCATED;
    }
    return R_LINK_UNSUPPORTED;
}

static inline PyObject *new_ref(PyObject *o) { Py_INCREF(o); return o; }

/* What parse_ipv4 / parse_ipv6 of beat/ip.py find, without making objects: the payload
 * bounds, the protocol and the fragment fields. NULL when the header is good, else the
 * borrowed reason string they return. */
typedef struct {
    Py_ssize_t start, end;      /* payload d[start:end] (empty when end <= start) */
    int proto;
    int fragment;               /* a fragment: (ident, frag_off, more) below */
    unsigned long ident, frag_off, more;
} ipinfo_t;

static PyObject *ip_info(int v6, const unsigned char *d, Py_ssize_t len, Py_ssize_t off, ipinfo_t *ip)
{
    ip->fragment = 0;
    if (!v6) {
        if (len < off + 20) return R_IP_TRUNCATED;
        if (d[off] >> 4 != 4) return R_IP_BAD_VERSION;
        Py_ssize_t hl = (d[off] & 0x0F) * 4, total = u16(d + off + 2);
        if (hl < 20 || total < hl) return R_IP_BAD_HLEN;
        ip->end = off + total;
        if (ip->end > len) ip->end = len;
        ip->start = off + hl;
        ip->proto = d[off + 9];
        unsigned ff = u16(d + off + 6);
        ip->frag_off = (ff & 0x1FFF) * 8;
        ip->more = (ff & 0x2000) != 0;
        ip->ident = u16(d + off + 4);
        ip->fragment = ip->more || ip->frag_off;
        return NULL;
    }
    if (len < off + 40) return R_IP_TRUNCATED;
    if (d[off] >> 4 != 6) return R_IP_BAD_VERSION;
    Py_ssize_t payload_len = u16(d + off + 4), pos = off + 40, end;
    int nh = d[off + 6], found = 0, i;
    unsigned long fid = 0, foff = 0, fmore = 0;
    end = payload_len ? (pos + payload_len < len ? pos + payload_len : len) : len;
    for (i = 0; i < 8; i++) {
        if (nh == 0 || nh == 43 || nh == 60 || nh == 135 || nh == 139 || nh == 140) {
            if (pos + 8 > end) return R_IP_TRUNCATED;
            int following = d[pos];
            pos += ((Py_ssize_t)d[pos + 1] + 1) * 8;
            nh = following;
        } else if (nh == 44) {
            if (pos + 8 > end) return R_IP_TRUNCATED;
            unsigned off_flags = u16(d + pos + 2);
            fid = ((unsigned long)d[pos + 4] << 24) | ((unsigned long)d[pos + 5] << 16)
                  | ((unsigned long)d[pos + 6] << 8) | d[pos + 7];
            foff = off_flags & 0xFFF8; fmore = off_flags & 1; found = 1;
            nh = d[pos];
            pos += 8;
        } else if (nh == 51) {
            if (pos + 8 > end) return R_IP_TRUNCATED;
            int following = d[pos];
            pos += ((Py_ssize_t)d[pos + 1] + 2) * 4;
            nh = following;
        } else break;
    }
    if (i == 8) return R_IP_TOO_MANY_EXT;
    if (pos > end) return R_IP_TRUNCATED;
    ip->fragment = found && (foff || fmore);
    ip->ident = fid; ip->frag_off = foff; ip->more = fmore;
    ip->start = pos;
    ip->end = end;
    ip->proto = nh;
    return NULL;
}

/* parse_ipv4 / parse_ipv6 of beat/ip.py: a new (src, dst, proto, payload, fragment)
 * tuple, or a borrowed reason string (its caller takes a reference). */
static PyObject *parse_ip(int v6, const unsigned char *d, Py_ssize_t len, Py_ssize_t off, int *is_reason)
{
    ipinfo_t ip;
    PyObject *reason = ip_info(v6, d, len, off, &ip), *fragment = NULL;
    *is_reason = reason != NULL;
    if (reason) return reason;
    if (ip.fragment) {
        fragment = v6 ? Py_BuildValue("(kkN)", ip.ident, ip.frag_off, PyBool_FromLong(ip.more))
                      : Py_BuildValue("(IIN)", (unsigned)ip.ident, (unsigned)ip.frag_off, PyBool_FromLong(ip.more));
        if (!fragment) return NULL;
    }
    int alen = v6 ? 16 : 4;
    Py_ssize_t addr = v6 ? off + 8 : off + 12;
    PyObject *t = PyTuple_New(5);
    if (!t) { Py_XDECREF(fragment); return NULL; }
    PyTuple_SET_ITEM(t, 0, PyBytes_FromStringAndSize((const char *)d + addr, alen));
    PyTuple_SET_ITEM(t, 1, PyBytes_FromStringAndSize((const char *)d + addr + alen, alen));
    PyTuple_SET_ITEM(t, 2, PyLong_FromLong(ip.proto));
    PyTuple_SET_ITEM(t, 3, PyBytes_FromStringAndSize((const char *)d + ip.start,
                                                     ip.start < ip.end ? ip.end - ip.start : 0));
    PyTuple_SET_ITEM(t, 4, fragment ? fragment : new_ref(Py_None));
    for (int k = 0; k < 4; k++)
        if (!PyTuple_GET_ITEM(t, k)) { Py_DECREF(t); return NULL; }
    return t;
}

static PyObject *locate_ip(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int linktype;
    const unsigned char *d;
    Py_ssize_t len;
    if (!frame_args(args, nargs, "locate_ip(linktype: int, data: bytes)", &linktype, &d, &len))
        return NULL;
    walk_t w;
    if (!locate(linktype, d, len, &w)) {
        PyObject *reason = locate_reason(linktype, d, len);
        if (!reason) reason = R_LINK_TRUNCATED;
        return new_ref(reason);
    }
    PyObject *parsed;
    if (w.ethertype == ET_IPV4 || w.ethertype == ET_IPV6) {
        int is_reason;
        parsed = parse_ip(w.ethertype == ET_IPV6, d, len, w.net, &is_reason);
        if (!parsed) return NULL;
        if (is_reason) Py_INCREF(parsed);
    } else
        parsed = new_ref(Py_None);
    PyObject *vlans = PyTuple_New(w.nvlans);
    if (!vlans) { Py_DECREF(parsed); return NULL; }
    for (int i = 0; i < w.nvlans; i++) PyTuple_SET_ITEM(vlans, i, PyLong_FromLong(w.vlans[i]));
    PyObject *t = PyTuple_New(4);
    if (!t) { Py_DECREF(parsed); Py_DECREF(vlans); return NULL; }
    PyTuple_SET_ITEM(t, 0, PyLong_FromLong(w.ethertype));
    PyTuple_SET_ITEM(t, 1, PyLong_FromSsize_t(w.net));
    PyTuple_SET_ITEM(t, 2, vlans);
    PyTuple_SET_ITEM(t, 3, parsed);
    return t;
}

/* ---- pcap_records: classic pcap records already in the read buffer --------- */
/* beat/sources/pcapfile.py's pcap_records_python is the reference. */

static inline uint32_t rd32(const unsigned char *p, int little)
{
    if (little) return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static PyObject *pcap_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "pcap_records(buf: bytes, pos, little, scale, max_caplen, "
                                         "frac_max, linktype, max_count)");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    int little = PyObject_IsTrue(args[2]);
    double scale = PyFloat_AsDouble(args[3]);
    long long max_caplen = PyLong_AsLongLong(args[4]);
    long long frac_max = PyLong_AsLongLong(args[5]);
    PyObject *linktype = args[6];
    Py_ssize_t max_count = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred() || little < 0) return NULL;
    if (pos < 0) pos = 0;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    long long last_sec = -1;
    while (pos <= len - 16 && PyList_GET_SIZE(list) < max_count) {
        const unsigned char *h = b + pos;
        uint32_t sec = rd32(h, little), frac = rd32(h + 4, little), caplen = rd32(h + 8, little),
                 wire = rd32(h + 12, little);
        Py_ssize_t following = pos + 16 + (Py_ssize_t)caplen;
        if ((long long)caplen > max_caplen || (long long)frac >= frac_max || following > len) break;
        double fraction = (double)frac * scale;
        double ts = (double)sec + fraction;
        PyObject *rec = PyTuple_New(4);
        if (!rec) goto fail;
        PyTuple_SET_ITEM(rec, 0, PyFloat_FromDouble(ts));
        Py_INCREF(linktype);
        PyTuple_SET_ITEM(rec, 1, linktype);
        PyTuple_SET_ITEM(rec, 2, PyBytes_FromStringAndSize((const char *)h + 16, caplen));
        PyTuple_SET_ITEM(rec, 3, PyLong_FromUnsignedLong(wire));
        if (!PyTuple_GET_ITEM(rec, 0) || !PyTuple_GET_ITEM(rec, 2) || !PyTuple_GET_ITEM(rec, 3)
            || PyList_Append(list, rec) < 0) {
            Py_DECREF(rec);
            goto fail;
        }
        /* Numbers and bytes only: no cycle through it, so the garbage collector need not
         * walk the batch's records (a collection during a batch touched every one). */
        PyObject_GC_UnTrack(rec);
        Py_DECREF(rec);
        last_sec = sec;
        pos = following;
    }
    if (last_sec < 0) return Py_BuildValue("(NnO)", list, pos, Py_None);
    return Py_BuildValue("(NnL)", list, pos, last_sec);
fail:
    Py_DECREF(list);
    return NULL;
}

/* ---- Dedup: beat/dedup.py's Dedup, same decisions ---------------------------- */
/* The Python class is the reference (tests/beat/test_framecore.py feeds both the
 * same packet streams). The key is the Python hash of the same tuple, except that
 * its bytes items (addresses, IPv4 identification, payload) are hashed by
 * payload_lane() below rather than SipHash (about 2,100 instructions per packet); the table keeps insertion order in a
 * ring of entries (deleted ones marked dead and skipped, the ring compacted when
 * full) and finds keys through an open-addressing index (linear probing,
 * backward-shift deletion). */

typedef struct { Py_hash_t key; double ts; int alive; } dd_entry;

typedef struct {
    PyObject_HEAD
    double window;
    Py_ssize_t max_packets;
    long long dropped, evicted_in_window;
    dd_entry *ring;             /* entries at positions [head, tail), index pos % cap */
    Py_ssize_t cap, head, tail, live;
    Py_ssize_t *slots;          /* ring position + 1, 0 for an empty slot */
    size_t mask;
} DedupObject;

static inline size_t dd_home(DedupObject *s, Py_hash_t key) { return (size_t)key & s->mask; }

/* The index slot holding `key`, or the empty slot where it would go (*found 0). */
static size_t dd_find(DedupObject *s, Py_hash_t key, int *found)
{
    size_t i = dd_home(s, key);
    while (s->slots[i]) {
        if (s->ring[(s->slots[i] - 1) % s->cap].key == key) { *found = 1; return i; }
        i = (i + 1) & s->mask;
    }
    *found = 0;
    return i;
}

static void dd_unindex(DedupObject *s, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & s->mask;
        if (!s->slots[j]) break;
        size_t k = dd_home(s, s->ring[(s->slots[j] - 1) % s->cap].key);
        /* the entry at j may move to i when its home is not in (i, j] (cyclically) */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = 0;
}

static void dd_reindex(DedupObject *s)
{
    memset(s->slots, 0, (s->mask + 1) * sizeof(Py_ssize_t));
    for (Py_ssize_t p = s->head; p < s->tail; p++) {
        dd_entry *e = &s->ring[p % s->cap];
        if (!e->alive) continue;
        int found;
        size_t i = dd_find(s, e->key, &found);
        s->slots[i] = p + 1;
    }
}

/* The ring is full: keep the live entries, in order, from position 0 of a new ring,
 * twice as large while at least half of it is live (up to the cap's needs): memory
 * grows with the traffic, as the Python table's, not with the configured cap. */
static int dd_compact(DedupObject *s)
{
    Py_ssize_t cap = s->cap, max_cap = 2 * (s->max_packets + 1);
    if (s->live >= cap / 2 && cap < max_cap) cap = cap * 2 < max_cap ? cap * 2 : max_cap;
    size_t size = s->mask + 1;
    while (size < (size_t)(2 * cap)) size <<= 1;
    dd_entry *ring = PyMem_Calloc(cap, sizeof(dd_entry));
    Py_ssize_t *slots = size != s->mask + 1 ? PyMem_Calloc(size, sizeof(Py_ssize_t)) : s->slots;
    if (!ring || !slots) {
        PyMem_Free(ring);
        if (slots != s->slots) PyMem_Free(slots);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t p = s->head; p < s->tail; p++) {
        dd_entry e = s->ring[p % s->cap];
        if (e.alive) ring[n++] = e;
    }
    PyMem_Free(s->ring);
    if (slots != s->slots) PyMem_Free(s->slots);
    s->ring = ring;
    s->slots = slots;
    s->mask = size - 1;
    s->cap = cap;
    s->head = 0;
    s->tail = n;
    dd_reindex(s);
    return 0;
}

static int dedup_init(DedupObject *s, PyObject *args, PyObject *kw)
{
    static char *names[] = {"window", "max_packets", NULL};
    double window = 0.1;
    Py_ssize_t max_packets = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|dn", names, &window, &max_packets)) return -1;
    if (max_packets < 1) max_packets = 1;
    if (max_packets > ((Py_ssize_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "max_packets too large");
        return -1;
    }
    PyMem_Free(s->ring);
    PyMem_Free(s->slots);
    s->window = window;
    s->max_packets = max_packets;
    s->dropped = s->evicted_in_window = 0;
    s->cap = 2 * (max_packets + 1) < 256 ? 2 * (max_packets + 1) : 256;
    size_t size = 16;
    while (size < (size_t)(2 * s->cap)) size <<= 1;
    s->mask = size - 1;
    s->ring = PyMem_Calloc(s->cap, sizeof(dd_entry));
    s->slots = PyMem_Calloc(size, sizeof(Py_ssize_t));
    s->head = s->tail = s->live = 0;
    if (!s->ring || !s->slots) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void dedup_dealloc(DedupObject *s)
{
    PyMem_Free(s->ring);
    PyMem_Free(s->slots);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* The decision for a packet whose fields hash to `key`: 1 a duplicate (counted), 0 not
 * (remembered), -1 an error (out of memory). */
static int dd_check(DedupObject *s, Py_hash_t key, double ts)
{
    int found;
    size_t i = dd_find(s, key, &found);
    if (found) {
        Py_ssize_t pos = s->slots[i] - 1;
        dd_entry *e = &s->ring[pos % s->cap];
        double d = ts - e->ts;
        if (-s->window <= d && d <= s->window) {
            s->dropped++;
            return 1;
        }
        e->alive = 0;                       /* an old packet seen again: a repeat, not a copy */
        dd_unindex(s, i);
        s->live--;
    }
    if (s->tail - s->head == s->cap && dd_compact(s) < 0) return -1;
    Py_ssize_t pos = s->tail++;
    dd_entry *e = &s->ring[pos % s->cap];
    e->key = key; e->ts = ts; e->alive = 1;
    i = dd_find(s, key, &found);
    s->slots[i] = pos + 1;
    s->live++;
    if (s->live > s->max_packets) {         /* the oldest entry is forgotten */
        while (!s->ring[s->head % s->cap].alive) s->head++;
        dd_entry *old = &s->ring[s->head % s->cap];
        i = dd_find(s, old->key, &found);
        dd_unindex(s, i);
        old->alive = 0;
        s->head++;
        s->live--;
        if (ts - old->ts <= s->window) s->evicted_in_window++;
    }
    return 0;
}


static Py_uhash_t payload_lane(const unsigned char *p, Py_ssize_t n);
static Py_hash_t tuple_hash(const Py_uhash_t *lanes, Py_ssize_t n);

/* The key of a packet's fields: the hash of the tuple (source, vlans, src, dst, proto,
 * ident, fragment, payload) with payload_lane() for its bytes items (addresses, IPv4
 * identification, payload), as batch_duplicate computes it. -1 with an exception set on error. */
static Py_hash_t dedup_key(PyObject *source, PyObject *vlans, PyObject *src, PyObject *dst, PyObject *proto,
                           PyObject *ident, PyObject *fragment, PyObject *payload)
{
#if SIZEOF_PY_UHASH_T > 4 && defined(__SIZEOF_INT128__)
    PyObject *items[8] = {source, vlans, src, dst, proto, ident, fragment, payload};
    Py_uhash_t lanes[8];
    for (int k = 0; k < 8; k++) {
        if (k == 2 || k == 3 || k == 5 || k == 7) {       /* bytes: payload_lane */
            Py_buffer view;
            if (PyObject_GetBuffer(items[k], &view, PyBUF_SIMPLE) < 0) return -1;
            lanes[k] = payload_lane(view.buf, view.len);
            PyBuffer_Release(&view);
        } else {
            Py_hash_t h = PyObject_Hash(items[k]);
            if (h == -1) return -1;
            lanes[k] = (Py_uhash_t)h;
        }
    }
    return tuple_hash(lanes, 8);
#else
    PyObject *fields = PyTuple_Pack(8, source, vlans, src, dst, proto, ident, fragment, payload);
    if (!fields) return -1;
    Py_hash_t key = PyObject_Hash(fields);
    Py_DECREF(fields);
    return key;
#endif
}

/* duplicate(source, ts, vlans, data, offset, parsed) -> bool, as Dedup.duplicate. */
static PyObject *dedup_duplicate(DedupObject *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_Check(args[3]) || !PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) != 5) {
        PyErr_SetString(PyExc_TypeError, "duplicate(source, ts, vlans, data: bytes, offset, parsed: 5-tuple)");
        return NULL;
    }
    if (!s->ring) { PyErr_SetString(PyExc_RuntimeError, "Dedup not initialised"); return NULL; }
    double ts = PyFloat_AsDouble(args[1]);
    Py_ssize_t offset = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) return NULL;
    PyObject *parsed = args[5], *src = PyTuple_GET_ITEM(parsed, 0);
    PyObject *ident;
    if (PyObject_Length(src) == 4) {         /* IPv4: identification, flags, fragment offset */
        ident = PySequence_GetSlice(args[3], offset + 4, offset + 8);
    } else {
        if (PyErr_Occurred()) return NULL;
        ident = PyBytes_FromStringAndSize(NULL, 0);
    }
    if (!ident) return NULL;
    Py_hash_t key = dedup_key(args[0], args[2], src, PyTuple_GET_ITEM(parsed, 1), PyTuple_GET_ITEM(parsed, 2),
                              ident, PyTuple_GET_ITEM(parsed, 4), PyTuple_GET_ITEM(parsed, 3));
    Py_DECREF(ident);
    if (key == -1 && PyErr_Occurred()) return NULL;
    int dup = dd_check(s, key, ts);
    if (dup < 0) return NULL;
    return PyBool_FromLong(dup);
}

static PyObject *dedup_counters(DedupObject *s, PyObject *unused)
{
    return Py_BuildValue("{sLsL}", "dedup.dropped", s->dropped, "dedup.evicted_in_window",
                         s->evicted_in_window);
}

static Py_ssize_t dedup_len(DedupObject *s) { return s->live; }

static PyMethodDef dedup_methods[] = {
    {"duplicate", (PyCFunction)(void (*)(void))dedup_duplicate, METH_FASTCALL,
     "duplicate(source, ts, vlans, data, offset, parsed) -> bool: wirebeat.dedup.Dedup.duplicate"},
    {"counters", (PyCFunction)dedup_counters, METH_NOARGS, "the dedup.* counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef dedup_members[] = {
    {"window", T_DOUBLE, offsetof(DedupObject, window), READONLY, NULL},
    {"max_packets", T_PYSSIZET, offsetof(DedupObject, max_packets), READONLY, NULL},
    {"dropped", T_LONGLONG, offsetof(DedupObject, dropped), READONLY, NULL},
    {"evicted_in_window", T_LONGLONG, offsetof(DedupObject, evicted_in_window), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods dedup_as_sequence = {.sq_length = (lenfunc)dedup_len};

static PyTypeObject DedupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._speedups.Dedup",
    .tp_basicsize = sizeof(DedupObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Dedup(window=0.1, max_packets=8192): wirebeat.dedup.Dedup in C",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)dedup_init,
    .tp_dealloc = (destructor)dedup_dealloc,
    .tp_methods = dedup_methods,
    .tp_members = dedup_members,
    .tp_as_sequence = &dedup_as_sequence,
};

/* ---- the document -------------------------------------------------------- */

typedef struct { char *p, *end; } out_t;

static inline void put(out_t *o, const char *s, size_t n) { memcpy(o->p, s, n); o->p += n; }
#define PUTS(o, lit) put((o), ("" lit), sizeof(lit) - 1)     /* string literals only */
static inline void put_uint(out_t *o, unsigned long long v)
{
    char tmp[24]; int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *o->p++ = tmp[--n];
}
static const char HEXU[] = "0123456789ABCDEF";
static inline void put_mac(out_t *o, const unsigned char *m)
{
    *o->p++ = '"';
    for (int i = 0; i < 6; i++) {
        if (i) *o->p++ = '-';
        *o->p++ = HEXU[m[i] >> 4]; *o->p++ = HEXU[m[i] & 15];
    }
    *o->p++ = '"';
}
/* An address as text, exactly as inet_ntop (so socket.inet_ntop, ip.ip_text) writes it
 * (_iptext.h), quoted. */
static inline void put_ip(out_t *o, const unsigned char *a, int alen)
{
    *o->p++ = '"';
    o->p = ip_text(o->p, a, alen);
    *o->p++ = '"';
}

/* "YYYY-MM-DDTHH:MM:SS" of a second since the epoch: second_text() (_isotime.h).
 * The last second's text is kept: frames come many per second. */
static long long cached_second = -1;
static char cached_text[19];

static void put_second(out_t *o, long long s)
{
    if (s != cached_second) {
        second_text(s, cached_text);
        cached_second = s;
    }
    memcpy(o->p, cached_text, 19);
    o->p += 19;
}

/* lower-case hex without leading zeros, as Python's f"{v:x}"; returns the length */
static int put_hex(char *p, unsigned long long v)
{
    char tmp[16]; int n = 0, len;
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    len = n;
    while (n) *p++ = tmp[--n];
    return len;
}

#define OUT_FIXED 1024
#define OUT_BUF 8192      /* everything but the caller's pre-serialised pieces fits in this */

/* packet_doc's ctx, checked once (packet_batch: once per batch). */
typedef struct {
    int tunnels;
    const unsigned char *ports;     /* 65536 indexes into apps */
    PyObject *apps;                 /* tuple of bytes */
    Py_ssize_t app_max;
    const char *event, *tail;
    Py_ssize_t ev_len, tail_len;
} docctx_t;

static int doc_ctx(PyObject *ctx, docctx_t *c)
{
    if (!PyTuple_Check(ctx) || PyTuple_GET_SIZE(ctx) != 5) {
        PyErr_SetString(PyExc_TypeError, "packet_doc: bad ctx");
        return 0;
    }
    c->tunnels = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 0));
    PyObject *ports = PyTuple_GET_ITEM(ctx, 1), *apps = PyTuple_GET_ITEM(ctx, 2);
    PyObject *event = PyTuple_GET_ITEM(ctx, 3), *tail = PyTuple_GET_ITEM(ctx, 4);
    if (c->tunnels < 0) return 0;
    if (!PyBytes_Check(ports) || PyBytes_GET_SIZE(ports) != 65536 || !PyTuple_Check(apps)
        || !PyBytes_Check(event) || !PyBytes_Check(tail)) {
        PyErr_SetString(PyExc_TypeError, "packet_doc: bad ctx");
        return 0;
    }
    c->app_max = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(apps); i++) {
        PyObject *a = PyTuple_GET_ITEM(apps, i);
        if (!PyBytes_Check(a)) { PyErr_SetString(PyExc_TypeError, "packet_doc: app names are bytes"); return 0; }
        if (PyBytes_GET_SIZE(a) > c->app_max) c->app_max = PyBytes_GET_SIZE(a);
    }
    c->ports = (const unsigned char *)PyBytes_AS_STRING(ports);
    c->apps = apps;
    c->event = PyBytes_AS_STRING(event); c->ev_len = PyBytes_GET_SIZE(event);
    c->tail = PyBytes_AS_STRING(tail); c->tail_len = PyBytes_GET_SIZE(tail);
    return 1;
}

/* The document of one frame written into buf (OUT_BUF bytes): its length; 0 where
 * packet_doc returns None (the Python path writes that one); -1 with an exception set. */
static Py_ssize_t write_doc(double ts, int linktype, const unsigned char *d, Py_ssize_t len,
                            const char *cap, Py_ssize_t cap_len, const docctx_t *c, char *buf)
{
    if (c->app_max > 64) return 0;          /* the stack buffer's bound; no tshark name is this long */
    /* Times the pure-Python path formats alike; outside them, it does the work. */
    if (!(ts >= 0.0 && ts < 8.0e9)) return 0;

    walk_t w;
    if (!locate(linktype, d, len, &w)) return 0;

    /* stack.link_layers */
    const char *link = "";
    char linkbuf[128];
    int complete = 1;
    if (linktype == LT_ETHERNET) {
        unsigned et = u16(d + 12);
        Py_ssize_t off = 14;
        if (et < 0x0600) { link = "eth"; complete = 0; }
        else {
            char *l = linkbuf;
            memcpy(l, "eth:ethertype", 13); l += 13;
            while (is_tpid(et)) {       /* locate() walked at most MAX_VLAN_TAGS tags */
                if (et == 0x8100) { memcpy(l, ":vlan:ethertype", 15); l += 15; }
                else if (et == 0x88A8) { memcpy(l, ":ieee8021ad:ethertype", 21); l += 21; }
                else { complete = 0; break; }
                et = u16(d + off + 2); off += 4;
            }
            *l = 0;
            link = linkbuf;
            if (complete && is_shim(et)) return 0;    /* MPLS / PPPoE: peel_link's job */
        }
    } else if (linktype == LT_SLL || linktype == LT_SLL2) link = "sll:ethertype";
    else if (linktype == LT_NULL || linktype == LT_LOOP) link = "null";
    else if (linktype == LT_RAW) link = "raw";
    else if (linktype == LT_IPV4 || linktype == LT_IPV6) link = "";
    else complete = 0;      /* DLT_RAW's BSD numbers: nothing named */
    if (complete && is_shim(w.ethertype)) return 0;

    Py_ssize_t bound = OUT_FIXED + cap_len + c->ev_len + c->tail_len + c->app_max;
    if (bound > OUT_BUF) return 0;          /* huge agent / capture names: the Python path */
    out_t o = {buf, buf + bound};

    /* @timestamp: decoders/api.py iso_time */
    double secf = floor(ts);
    long long seconds = (long long)secf;
    long long micros = (long long)nearbyint((ts - (double)seconds) * 1e6);
    if (micros >= 1000000) { seconds += 1; micros -= 1000000; }
    PUTS(&o, "{\"@timestamp\":\"");
    put_second(&o, seconds);
    *o.p++ = '.';
    for (int i = 5; i >= 0; i--) { o.p[i] = (char)('0' + micros % 10); micros /= 10; }
    o.p += 6;
    *o.p++ = 'Z';
    PUTS(&o, "\",\"type\":\"packet\",\"event\":");
    put(&o, c->event, c->ev_len);
    PUTS(&o, ",\"network\":{\"bytes\":");
    put_uint(&o, (unsigned long long)len);
    if (w.nvlans) {
        PUTS(&o, ",\"vlan\":{\"id\":\"");
        put_uint(&o, w.vlans[0]);
        PUTS(&o, "\"}");
        if (w.nvlans > 1) {
            PUTS(&o, ",\"inner\":{\"vlan\":{\"id\":\"");
            put_uint(&o, w.vlans[1]);
            PUTS(&o, "\"}}");
        }
    }
    /* network layer: packets.py _layers / _derive / _arp */
    char stack[256];
    size_t linklen = strlen(link);
    memcpy(stack, link, linklen);
    size_t stl = linklen;
    int have_ip = 0, have_ports = 0, sport = 0, dport = 0, arp = 0;
#define STACK(lit) do { if (stl) stack[stl++] = ':'; memcpy(stack + stl, lit, sizeof(lit) - 1); stl += sizeof(lit) - 1; } while (0)
    if (complete && (w.ethertype == ET_IPV4 || w.ethertype == ET_IPV6)) {
        walk_ip(d, len, &w);
        if (w.ip) {
            have_ip = 1;
            int v6 = w.ip == 6;
            Py_ssize_t head = len - w.transport;      /* transport bytes captured */
            const unsigned char *h = d + w.transport;
            if (v6) PUTS(&o, ",\"type\":\"ipv6\""); else PUTS(&o, ",\"type\":\"ipv4\"");
            if (v6) STACK("ipv6"); else STACK("ip");
            int proto = w.proto;
            const char *transport = proto == 6 ? "tcp" : proto == 17 ? "udp" : proto == 1 ? "icmp"
                                    : proto == 58 ? "ipv6-icmp" : NULL;
            if (proto == 47 && c->tunnels) return 0;    /* GRE: peeled per packet */
            if (transport && head >= 4) {
                PUTS(&o, ",\"transport\":\"");
                put(&o, transport, strlen(transport));
                *o.p++ = '"';
                if (proto == 6 || proto == 17) {
                    sport = u16(h); dport = u16(h + 2); have_ports = 1;
                    if (proto == 6) STACK("tcp");
                    else {
                        if (c->tunnels && (dport == 4789 || dport == 6081)) return 0;
                        STACK("udp");
                        const unsigned char *table = c->ports;
                        int app = table[dport] ? table[dport] : table[sport];
                        if (app) {
                            if (app >= PyTuple_GET_SIZE(c->apps)) {
                                PyErr_SetString(PyExc_ValueError, "packet_doc: port table index out of range");
                                return -1;
                            }
                            PyObject *name = PyTuple_GET_ITEM(c->apps, app);
                            stack[stl++] = ':';
                            memcpy(stack + stl, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
                            stl += PyBytes_GET_SIZE(name);
                        }
                    }
                } else {
                    sport = h[0]; dport = h[1];
                    if (proto == 1) STACK("icmp"); else STACK("icmpv6");
                }
                char cid[30];
                community_id(proto, d + w.addr, d + w.addr + w.alen, w.alen, sport, dport, cid);
                PUTS(&o, ",\"community_id\":\"");
                put(&o, cid, 30);
                *o.p++ = '"';
            }
        }
    } else if (complete && w.ethertype == ET_ARP) {
        STACK("arp");
        arp = len >= w.net + 28 && d[w.net + 4] == 6 && d[w.net + 5] == 4;
    }
#undef STACK
    if (stl) {
        PUTS(&o, ",\"protocol_stack\":\"");
        put(&o, stack, stl);
        *o.p++ = '"';
    }
    *o.p++ = '}';
    *o.p++ = ',';
    put(&o, cap, cap_len);

    /* source and destination, each only when it has a field */
    const unsigned char *smac = NULL, *dmac = NULL;
    if (linktype == LT_ETHERNET) { dmac = d; smac = d + 6; }
    else if (linktype == LT_SLL && u16(d + 4) == 6) smac = d + 6;
    else if (linktype == LT_SLL2 && d[11] == 6) smac = d + 12;
    for (int side = 0; side < 2; side++) {
        const unsigned char *mac = side ? dmac : smac;
        const unsigned char *ip = NULL;
        int alen = 4;
        if (have_ip) { ip = d + w.addr + (side ? w.alen : 0); alen = w.alen; }
        else if (arp) ip = d + w.net + (side ? 24 : 14);
        if (!mac && !ip) continue;
        if (side) PUTS(&o, ",\"destination\":{"); else PUTS(&o, ",\"source\":{");
        int first = 1;
        if (mac) { PUTS(&o, "\"mac\":"); put_mac(&o, mac); first = 0; }
        if (ip) {
            if (!first) *o.p++ = ',';
            PUTS(&o, "\"ip\":");
            put_ip(&o, ip, alen);
            if (have_ports) { PUTS(&o, ",\"port\":"); put_uint(&o, side ? dport : sport); }
        }
        *o.p++ = '}';
    }
    *o.p++ = ',';
    put(&o, c->tail, c->tail_len);
    *o.p++ = '}';
    return o.p - buf;
}

/* _id: f"{prefix}-{round(ts * 1e6):x}-{n:x}" */
static PyObject *make_id(PyObject *prefix, double ts, unsigned long long n)
{
    char idtail[64];
    int il = 0;
    idtail[il++] = '-';
    il += put_hex(idtail + il, (unsigned long long)nearbyint(ts * 1e6));
    idtail[il++] = '-';
    il += put_hex(idtail + il, n);
    if (PyUnicode_IS_COMPACT_ASCII(prefix)) {       /* one allocation: the common case */
        Py_ssize_t plen = PyUnicode_GET_LENGTH(prefix);
        PyObject *id = PyUnicode_New(plen + il, 127);
        if (!id) return NULL;
        memcpy(PyUnicode_DATA(id), PyUnicode_DATA(prefix), plen);
        memcpy((char *)PyUnicode_DATA(id) + plen, idtail, il);
        return id;
    }
    PyObject *tailstr = PyUnicode_FromStringAndSize(idtail, il);
    if (!tailstr) return NULL;
    PyObject *id = PyUnicode_Concat(prefix, tailstr);
    Py_DECREF(tailstr);
    return id;
}

static PyObject *packet_doc(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyBytes_Check(args[2]) || !PyBytes_Check(args[3]) || !PyUnicode_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "packet_doc(ts, linktype, data, capture_json, id_prefix, n, ctx)");
        return NULL;
    }
    double ts = PyFloat_AsDouble(args[0]);
    if (ts == -1.0 && PyErr_Occurred()) return NULL;
    int linktype = (int)PyLong_AsLong(args[1]);
    if (linktype == -1 && PyErr_Occurred()) return NULL;
    unsigned long long n = PyLong_AsUnsignedLongLong(args[5]);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    docctx_t c;
    if (!doc_ctx(args[6], &c)) return NULL;
    char buf[OUT_BUF];
    Py_ssize_t size = write_doc(ts, linktype, (const unsigned char *)PyBytes_AS_STRING(args[2]),
                                PyBytes_GET_SIZE(args[2]), PyBytes_AS_STRING(args[3]),
                                PyBytes_GET_SIZE(args[3]), &c, buf);
    if (size < 0) return NULL;
    if (size == 0) Py_RETURN_NONE;
    PyObject *res = PyBytes_FromStringAndSize(buf, size);
    if (!res) return NULL;
    PyObject *doc_id = make_id(args[4], ts, n);
    if (!doc_id) { Py_DECREF(res); return NULL; }
    PyObject *pair = PyTuple_New(2);
    if (!pair) { Py_DECREF(res); Py_DECREF(doc_id); return NULL; }
    PyTuple_SET_ITEM(pair, 0, doc_id);
    PyTuple_SET_ITEM(pair, 1, res);
    return pair;
}

/* ---- packet_batch: per-packet documents alone, a reader batch at a time ------ */
/* When the engine has nothing but per-packet documents to make (no decoder can be
 * reached, no flows, no processors: Engine.on_batch), a plain frame needs its
 * document, the duplicate check and a few counters, no Python. This walks a reader
 * batch doing exactly what Engine.on_frame + PacketDocuments would for such a frame
 * and stops at the first frame that needs more (a tick due, a non-IP or malformed
 * frame, a fragment, a tunnel, a document only the Python path writes): the engine
 * takes that one frame its usual way and calls again after it. */

#if SIZEOF_PY_UHASH_T > 4 && defined(__SIZEOF_INT128__)
/* CPython's tuple hash (Objects/tupleobject.c, xxHash-based, 3.8 and later) over
 * the hashes of its items: Dedup's key without making the tuple. */
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#define BATCH_DEDUP 1

/* The payload's part of a Dedup key: a 64-bit hash keyed with this process's hash
 * secret, 16 bytes per multiply. Each block's 128-bit product of its two words
 * (each xored with a secret) is folded to 64 bits, added to the state, and the state
 * multiplied by an odd constant, so blocks count by position; the length starts the
 * state, so zero padding of the last block cannot make two lengths alike. Not a
 * cryptographic hash: like the SipHash it replaces, it relies on the secret to keep
 * crafted collisions out of reach of someone who cannot read this process. */
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static Py_uhash_t payload_lane(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t s0 = _Py_HashSecret.siphash.k0, s1 = _Py_HashSecret.siphash.k1;
    const uint64_t odd = 0x9E3779B97F4A7C15ULL;       /* 2^64 / golden ratio, made odd */
    uint64_t h = fold_mul((uint64_t)n ^ s0, odd ^ s1), a, b;
    for (; n >= 16; p += 16, n -= 16) {
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        h = (h + fold_mul(a ^ s0, b ^ s1)) * odd;
    }
    if (n > 0) {
        unsigned char tail[16] = {0};
        memcpy(tail, p, (size_t)n);
        memcpy(&a, tail, 8);
        memcpy(&b, tail + 8, 8);
        h = (h + fold_mul(a ^ s0, b ^ s1)) * odd;
    }
    return (Py_uhash_t)fold_mul(h ^ s1, odd);
}

static Py_hash_t tuple_hash(const Py_uhash_t *lanes, Py_ssize_t n)
{
    Py_uhash_t acc = XXPRIME_5;
    for (Py_ssize_t i = 0; i < n; i++) {
        acc += lanes[i] * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += n ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1) return 1546275796;
    return (Py_hash_t)acc;
}

/* Dedup.duplicate for a located IP frame of the batch's source (packet_batch and
 * frame_batch): hash((source, vlans, src, dst, proto, ident, fragment, payload)) as
 * dedup.py makes it, fragment None. 1 a duplicate, 0 not, -1 an error. */
static int batch_duplicate(DedupObject *dd, Py_uhash_t source_lane, Py_uhash_t none_lane, const walk_t *w,
                           int v6, const unsigned char *d, int proto, const unsigned char *pl,
                           Py_ssize_t plen, double ts)
{
    Py_uhash_t vl[MAX_VLAN_TAGS], lanes[8];
    for (int k = 0; k < w->nvlans; k++) vl[k] = w->vlans[k];
    int alen = v6 ? 16 : 4;
    Py_ssize_t addr = w->net + (v6 ? 8 : 12);
    lanes[0] = source_lane;
    lanes[1] = (Py_uhash_t)tuple_hash(vl, w->nvlans);
    lanes[2] = payload_lane(d + addr, alen);
    lanes[3] = payload_lane(d + addr + alen, alen);
    lanes[4] = (Py_uhash_t)proto;
    lanes[5] = payload_lane(d + w->net + 4, v6 ? 0 : 4);
    lanes[6] = none_lane;
    lanes[7] = payload_lane(pl, plen);
    return dd_check(dd, tuple_hash(lanes, 8), ts);
}
#else
#define BATCH_DEDUP 0
#endif

/* The batch functions' Dedup: NULL for None; the lanes of the source's and None's
 * hashes. 0, or -1 with an exception set. */
static int batch_dedup(PyObject *dedup, PyObject *source, DedupObject **dd, Py_uhash_t *source_lane,
                       Py_uhash_t *none_lane)
{
    *dd = dedup == Py_None ? NULL : (DedupObject *)dedup;
    *source_lane = *none_lane = 0;
    if (!*dd) return 0;
    if (!(*dd)->ring) { PyErr_SetString(PyExc_RuntimeError, "Dedup not initialised"); return -1; }
    Py_hash_t h = PyObject_Hash(source);
    if (h == -1) return -1;
    *source_lane = (Py_uhash_t)h;
    *none_lane = (Py_uhash_t)PyObject_Hash(Py_None);
    return 0;
}

/* A reader batch's item (ts, linktype, data, ...) as the C loops take it: a float time, a link
 * type in 0..65535 and the frame's bytes (borrowed); 0 for anything else (on_frame's to handle). */
static inline int batch_item(PyObject *item, PyObject **tso, PyObject **lto, PyObject **data, long *lt)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) return 0;
    *tso = PyTuple_GET_ITEM(item, 0);
    *lto = PyTuple_GET_ITEM(item, 1);
    *data = PyTuple_GET_ITEM(item, 2);
    if (!PyFloat_CheckExact(*tso) || !PyLong_CheckExact(*lto) || !PyBytes_CheckExact(*data)) return 0;
    int overflow;
    *lt = PyLong_AsLongAndOverflow(*lto, &overflow);
    return !overflow && *lt >= 0 && *lt <= 0xFFFF;
}

static PyObject *packet_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12 || !PyList_Check(args[0]) || !PyBytes_Check(args[4]) || !PyUnicode_Check(args[5])
        || (args[8] != Py_None && !PyObject_TypeCheck(args[8], &DedupType)) || !PyList_Check(args[11])) {
        PyErr_SetString(PyExc_TypeError, "packet_batch(batch: list, start, limit, until_ts, capture_json, "
                        "id_prefix, n, ctx, dedup: Dedup | None, source, fragment, out: list)");
        return NULL;
    }
    PyObject *batch = args[0], *prefix = args[5], *source = args[9], *fragment = args[10], *out = args[11];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), limit = PyLong_AsSsize_t(args[2]);
    double until = PyFloat_AsDouble(args[3]);
    unsigned long long n = PyLong_AsUnsignedLongLong(args[6]);
    if (PyErr_Occurred()) return NULL;
    docctx_t c;
    if (!doc_ctx(args[7], &c)) return NULL;
    DedupObject *dd;
    Py_uhash_t source_lane, none_lane;
    if (batch_dedup(args[8], source, &dd, &source_lane, &none_lane) < 0) return NULL;
    const char *cap = PyBytes_AS_STRING(args[4]);
    Py_ssize_t cap_len = PyBytes_GET_SIZE(args[4]);
    Py_ssize_t end = PyList_GET_SIZE(batch), i;
    if (start < 0) start = 0;
    if (limit >= 0 && end - start > limit) end = start + limit;
    long long nbytes = 0, untracked = 0;
    char buf[OUT_BUF];
    for (i = start; i < end; i++) {
        PyObject *tso, *lto, *data;
        long lt;
        if (!batch_item(PyList_GET_ITEM(batch, i), &tso, &lto, &data, &lt)) break;
        double ts = PyFloat_AS_DOUBLE(tso);
        if (!(ts < until)) break;                   /* a tick is due (or no number): on_frame */
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        walk_t w;
        if (!locate((int)lt, d, len, &w)) break;    /* malformed: counted by on_frame */
        if (w.ethertype != ET_IPV4 && w.ethertype != ET_IPV6) break;     /* non-IP, shims */
        int v6 = w.ethertype == ET_IPV6;
        ipinfo_t ip;
        if (ip_info(v6, d, len, w.net, &ip) || ip.fragment) break;       /* malformed, reassembly */
        Py_ssize_t plen = ip.end > ip.start ? ip.end - ip.start : 0;
        const unsigned char *pl = d + ip.start;
        if (ip.proto == 47) break;                                      /* GRE: a tunnel */
        if (ip.proto == 17) {
            if (plen < 8) break;                                        /* udp.truncated */
            unsigned port = u16(pl + 2);
            if (port == 4789 || port == 6081) break;                    /* tunnels.TUNNEL_PORTS */
        } else if (ip.proto == 6) {                                     /* else tcp.* malformed */
            if (plen < 20) break;
            Py_ssize_t hl = (pl[12] >> 4) * 4;
            if (hl < 20 || hl > plen) break;
        }
        Py_ssize_t size = write_doc(ts, (int)lt, d, len, cap, cap_len, &c, buf);
        if (size < 0) { PyErr_Clear(); break; }     /* packet_doc raises it for this frame */
        if (size == 0) break;                       /* the Python path writes this document */
#if !BATCH_DEDUP
        if (dd) break;
#endif
        /* From here on the frame is handled here: its document first (made before the
         * duplicate check, as on_frame does), then the check, then the counters. */
        PyObject *text = PyBytes_FromStringAndSize(buf, size);
        if (!text) return NULL;
        PyObject *doc = PyObject_CallOneArg(fragment, text);
        Py_DECREF(text);
        if (!doc) return NULL;
        PyObject *doc_id = make_id(prefix, ts, n + (unsigned long long)(i - start));
        if (!doc_id) { Py_DECREF(doc); return NULL; }
        PyObject *pair = PyTuple_New(2);
        if (!pair) { Py_DECREF(doc); Py_DECREF(doc_id); return NULL; }
        PyTuple_SET_ITEM(pair, 0, doc_id);
        PyTuple_SET_ITEM(pair, 1, doc);
        int failed = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (failed) return NULL;
        int duplicate = 0;
#if BATCH_DEDUP
        if (dd) {
            duplicate = batch_duplicate(dd, source_lane, none_lane, &w, v6, d, ip.proto, pl, plen, ts);
            if (duplicate < 0) return NULL;
        }
#endif
        if (!duplicate && ip.proto == 6) untracked++;       /* packets.tcp_untracked */
        nbytes += len;
    }
    return Py_BuildValue("(nLL)", i, nbytes, untracked);
}

/* ---- frame_batch: Engine.on_frame for the frames no Python decoder needs ------ */
/* beat/frameloop.py (Engine.on_batch with flows and decoders, no per-packet
 * documents) calls this with a whole reader batch. For each frame it decides,
 * before any side effect, whether Engine.on_frame would hand it to Python code
 * beyond the engine's own bookkeeping: a tick due, a link or IP header the
 * engine rejects or peels (malformed, shims, fragments, tunnels), a TCP segment
 * a connection's decoder or the detectors may need (payload of a connection not
 * bypassed, SYN/FIN/RST of a tracked connection, a segment on a routed port or
 * with payload to detect), a UDP datagram with a flow, a route, an announced
 * endpoint or a heuristic to ask, an IP protocol with a decoder. Such a frame
 * goes to engine.on_frame (the reference) as it is; every other frame gets here
 * what on_frame does to it, in the same order: the duplicate check, the
 * conversation's link header (macs), the flow table's account (its own C
 * core, called as the engine calls it), then the counters, non-IP counting, an
 * untracked TCP segment, or a segment of a bypassed connection or a pure ACK
 * of a tracked one (TCPConnection.segment's work for those: last_ts,
 * timestamps_behind, segments, segments_bypassed). Counters are added to the
 * Python objects at the end (and before an error propagates); engine.frame is
 * left at the last frame, as on_frame leaves it.
 * tests/beat/test_frameloop.py runs every bundled capture and hostile frames
 * both ways and requires the same documents in the same order and the same
 * counters. */

#define PM_UDP_ROUTE 1
#define PM_TCP_ROUTE 2
#define PM_TUNNEL 4
#define CALL_UDP 1
#define CALL_TCP 2
#define CALL_IP 3
#define CALL_SEGMENT 4      /* CALL_TCP for a tracked connection: its `segment` straight away */
#define CALL_UDP_FLOW 5     /* CALL_UDP for a routed flow the table holds: its datagram to `_deliver` */

#include "_flowapi.h"

/* wirebeat._flowcore's account_raw, when that module is built: frame_batch then accounts a
 * frame to its flow without the Python call (NULL: not looked up yet or not there). */
static flowcore_api_t *flowcore_api;
static int flowcore_looked_up;

static flowcore_api_t *get_flowcore_api(void)
{
    if (!flowcore_looked_up) {
        flowcore_looked_up = 1;
        flowcore_api = PyCapsule_Import(FLOWCORE_API_NAME, 0);
        if (flowcore_api == NULL) PyErr_Clear();        /* not built: the Python call */
    }
    return flowcore_api;
}

static PyObject *S_packets, *S_bytes, *S_non_ip, *S_tcp_untracked, *S_delivered, *S_mac_evicted,
    *S_segments, *S_segments_bypassed, *S_timestamps_behind, *S_frame, *S_tunnel, *S_next_tick,
    *S_bypassed, *S_last_ts, *S_client_first, *S_client, *S_server, *S_nxt, *S_started, *S_ended,
    *S_popitem, *S_segment, *S_icmp, *S_ipv6_icmp, *S_route, *S_key;

/* obj.name += delta (a Python int attribute). 0 on success, -1 with an exception set. */
static int add_attr(PyObject *obj, PyObject *name, long long delta)
{
    if (!delta) return 0;
    PyObject *old = PyObject_GetAttr(obj, name);
    if (!old) return -1;
    PyObject *d = PyLong_FromLongLong(delta);
    if (!d) { Py_DECREF(old); return -1; }
    PyObject *sum = PyNumber_Add(old, d);
    Py_DECREF(old); Py_DECREF(d);
    if (!sum) return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* A bool attribute: 1, 0, or -1 with an exception set. */
static int attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* Where a __slots__ attribute of `type` lives in its objects: the byte offset of a
 * plain object slot (a writable T_OBJECT_EX member, what `__slots__` makes), or -1 when
 * the name is anything else there (a property, a class attribute shadowing the slot, a
 * __dict__ attribute): then the caller goes through PyObject_GetAttr/SetAttr. */
static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *descr = _PyType_Lookup(type, name);       /* borrowed */
    if (descr && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) return m->offset;
    }
    return -1;
}

/* ---- Maker: a slotted dataclass's instance without its Python __init__ ------ */
/* Calling a dataclass runs its generated __init__, a Python frame entered from C
 * (type_call, slot_tp_init): ~2,400 instructions for six fields, of which storing
 * the fields is a tenth. The engine and the decoders make several records per
 * packet (FlowKey, Datagram, Transaction, a decoder's message), so a Maker makes
 * them as that __init__ would: the type's tp_alloc, then each argument stored in
 * its __slots__ member, in field order. beat/records.py checks the class first (a
 * plain slotted dataclass whose __init__ only stores its fields) and hands the
 * field names; a call with any other number of arguments, or keywords, is passed
 * to the class itself. tests/beat/test_records.py compares the two. */

#define MAKER_MAX_FIELDS 24

typedef struct {
    PyObject_HEAD
    PyTypeObject *type;
    Py_ssize_t n;
    Py_ssize_t offsets[MAKER_MAX_FIELDS];
    vectorcallfunc vectorcall;
} MakerObject;

static PyObject *maker_call(MakerObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != m->n || kwnames != NULL)
        return PyObject_Vectorcall((PyObject *)m->type, args, nargsf, kwnames);
    PyObject *o = m->type->tp_alloc(m->type, 0);
    if (!o) return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        *(PyObject **)((char *)o + m->offsets[i]) = Py_NewRef(args[i]);
    return o;
}

static PyObject *maker_new(PyTypeObject *subtype, PyObject *args, PyObject *kwds)
{
    PyObject *cls, *names;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Maker(cls, field_names) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!:Maker", &PyType_Type, &cls, &PyTuple_Type, &names)) return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    /* Allocated as object.__new__ allocates it; the fields' stores are what __init__ does. */
    if (n < 1 || n > MAKER_MAX_FIELDS || type->tp_new != PyBaseObject_Type.tp_new
            || type->tp_setattro != PyObject_GenericSetAttr || type->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "Maker: not a plain slotted class");
        return NULL;
    }
    MakerObject *m = (MakerObject *)subtype->tp_alloc(subtype, 0);
    if (!m) return NULL;
    m->type = (PyTypeObject *)Py_NewRef(cls);
    m->n = n;
    m->vectorcall = (vectorcallfunc)maker_call;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        Py_ssize_t offset = PyUnicode_Check(name) ? slot_offset(type, name) : -1;
        if (offset < 0) {
            PyErr_Format(PyExc_TypeError, "Maker: %R is no slot of %R", name, cls);
            Py_DECREF(m);
            return NULL;
        }
        m->offsets[i] = offset;
    }
    return (PyObject *)m;
}

static void maker_dealloc(MakerObject *m)
{
    Py_XDECREF(m->type);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *maker_repr(MakerObject *m)
{
    return PyUnicode_FromFormat("<Maker of %s>", m->type->tp_name);
}

static PyMemberDef maker_members[] = {
    {"cls", T_OBJECT, offsetof(MakerObject, type), READONLY, "the class made"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject MakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wirebeat._speedups.Maker",
    .tp_basicsize = sizeof(MakerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Maker(cls, field_names): cls(*values) for a plain slotted dataclass, without "
              "its Python __init__ (beat/records.py)",
    .tp_new = maker_new,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_repr = (reprfunc)maker_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(MakerObject, vectorcall),
    .tp_members = maker_members,
};

/* TCPConnection's attributes frame_batch reads for every segment of a bypassed
 * connection or a pure ACK (wirebeat.tcp): found once per batch from the first
 * connection's type, then read and written in place. A segment costs three
 * attribute lookups through the type otherwise (~650 instructions of ~2,000 the
 * frame's bookkeeping costs). An object of another type, or a slot not set, takes the
 * generic calls. */
typedef struct {
    PyTypeObject *type;             /* NULL: not looked up yet */
    Py_ssize_t bypassed, last_ts;   /* offsets, or -1: by name */
} connslots_t;

static void connslots_find(connslots_t *cs, PyObject *conn)
{
    if (cs->type) return;
    cs->type = Py_TYPE(conn);       /* compared, never used after its objects are gone */
    cs->bypassed = slot_offset(cs->type, S_bypassed);
    cs->last_ts = slot_offset(cs->type, S_last_ts);
}

/* The slot of `conn` at `offset` (its object may be NULL: not set), or NULL: go by name. */
static inline PyObject **conn_slot(const connslots_t *cs, PyObject *conn, Py_ssize_t offset)
{
    if (offset < 0 || Py_TYPE(conn) != cs->type) return NULL;
    return (PyObject **)((char *)conn + offset);
}

typedef struct {
    long long packets, bytes, non_ip, untracked, delivered, mac_evicted, segments, bypassed, behind;
} fcount_t;

static int flush_counts(PyObject *engine, PyObject *tcp_counters, fcount_t *c)
{
    int r = 0;
    r |= add_attr(engine, S_packets, c->packets);
    r |= add_attr(engine, S_bytes, c->bytes);
    r |= add_attr(engine, S_non_ip, c->non_ip);
    r |= add_attr(engine, S_tcp_untracked, c->untracked);
    r |= add_attr(engine, S_delivered, c->delivered);
    r |= add_attr(engine, S_mac_evicted, c->mac_evicted);
    r |= add_attr(tcp_counters, S_segments, c->segments);
    r |= add_attr(tcp_counters, S_segments_bypassed, c->bypassed);
    r |= add_attr(tcp_counters, S_timestamps_behind, c->behind);
    memset(c, 0, sizeof *c);
    return r ? -1 : 0;
}

/* (a, pa) <= (b, pb) as Python compares the (bytes, port) pairs. */
static int endpoint_first(const unsigned char *a, unsigned pa, const unsigned char *b, unsigned pb, int alen)
{
    int cmp = memcmp(a, b, alen);
    return cmp < 0 || (cmp == 0 && pa <= pb);
}

/* The key of the engine's TCP and UDP tables (engine.py `_conversation_key`): the lower
 * endpoint's address, the other's, then their ports in that order, 2 bytes each, big-endian. */
static PyObject *conv_key(const unsigned char *sa, unsigned sport, const unsigned char *da, unsigned dport,
                          int alen, int src_first)
{
    PyObject *key = PyBytes_FromStringAndSize(NULL, 2 * alen + 4);
    if (!key) return NULL;
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(key);
    unsigned first = src_first ? sport : dport, second = src_first ? dport : sport;
    memcpy(k, src_first ? sa : da, alen);
    memcpy(k + alen, src_first ? da : sa, alen);
    k[2 * alen] = first >> 8; k[2 * alen + 1] = first & 0xFF;
    k[2 * alen + 2] = second >> 8; k[2 * alen + 3] = second & 0xFF;
    return key;
}

/* An address as a str, as ip.ip_text gives it (_iptext.h). */
static PyObject *address_text(const unsigned char *a, int alen)
{
    char text[48];
    return PyUnicode_FromStringAndSize(text, ip_text(text, a, alen) - text);
}

/* Engine._on_ip_protocol's ICMP and ICMPv6 step for a payload of two bytes or more: the
 * flow (the type and code as its ports, the source's name), the datagram, then
 * Engine._deliver(state, route, datagram), which counts it and calls the decoder.
 * `with` = (deliver, new_flow_key, new_datagram, state, state's name, route). */
static PyObject *deliver_icmp(PyObject *const *with, PyObject *tso, int proto, const unsigned char *sa,
                              const unsigned char *da, int alen, PyObject *payload)
{
    const unsigned char *pl = (const unsigned char *)PyBytes_AS_STRING(payload);
    PyObject *client = address_text(sa, alen), *server = address_text(da, alen);
    PyObject *type_o = PyLong_FromLong(pl[0]), *code_o = PyLong_FromLong(pl[1]);
    PyObject *flow = NULL, *dgram = NULL, *r = NULL;
    if (client && server && type_o && code_o) {
        PyObject *f[6] = {proto == 1 ? S_icmp : S_ipv6_icmp, client, type_o, server, code_o, with[4]};
        flow = PyObject_Vectorcall(with[1], f, 6, NULL);
    }
    if (flow) {
        PyObject *d[5] = {tso, flow, Py_True, payload, Py_False};
        dgram = PyObject_Vectorcall(with[2], d, 5, NULL);
    }
    if (dgram) {
        PyObject *a[3] = {with[3], with[5], dgram};
        r = PyObject_Vectorcall(with[0], a, 3, NULL);
    }
    Py_XDECREF(client); Py_XDECREF(server); Py_XDECREF(type_o); Py_XDECREF(code_o);
    Py_XDECREF(flow); Py_XDECREF(dgram);
    return r;
}

/* frame_batch(batch, source, engine, state, on_frame, ctx) -> None
 *   ctx = (portmap: 65536 bytes, ipmap: 256 bytes, decoding, detecting, probing,
 *          max_mac_pairs, non_ip_counts: dict | None (None: non-IP frames to on_frame),
 *          engine._on_udp, engine._on_tcp, engine._on_ip_protocol, engine.routes_ip,
 *          engine._deliver, the FlowKey and Datagram makers (wirebeat.records), engine._UDPFlow) */
/* Engine._on_udp's step for a datagram of a flow the table holds with a route (`flow`,
 * an engine._UDPFlow): the flow's last_ts, whether the client sent it, the body within
 * the UDP length, then Engine._deliver(state, route, Datagram(...)). NotImplemented,
 * before any change, when the flow's client is not the (address, port) tuple _on_udp
 * makes: then _on_udp does it. `with` = (deliver, new_datagram, state). */
static PyObject *deliver_udp(PyObject *const *with, PyObject *flow, PyObject *tso, unsigned sport,
                             PyObject *src, PyObject *payload)
{
    const unsigned char *pl = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t plen = PyBytes_GET_SIZE(payload), length = u16(pl + 4);
    PyObject *route = NULL, *key = NULL, *client = NULL, *body = NULL, *dgram = NULL, *r = NULL;
    if (!(route = PyObject_GetAttr(flow, S_route)) || !(key = PyObject_GetAttr(flow, S_key))
            || !(client = PyObject_GetAttr(flow, S_client)))
        goto done;
    if (route == Py_None || !PyTuple_CheckExact(client) || PyTuple_GET_SIZE(client) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(client, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(client, 1))) {
        r = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    /* `flow.client[1] == sport and flow.client[0] == src` */
    int overflow;
    long port = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(client, 1), &overflow);
    PyObject *address = PyTuple_GET_ITEM(client, 0);
    int from_client = !overflow && port == (long)sport && PyBytes_GET_SIZE(address) == PyBytes_GET_SIZE(src)
                      && memcmp(PyBytes_AS_STRING(address), PyBytes_AS_STRING(src), PyBytes_GET_SIZE(src)) == 0;
    if (PyObject_SetAttr(flow, S_last_ts, tso) < 0) goto done;
    /* the UDP length bounds the body (Ethernet padding follows); past the bytes: a snap-length cut */
    Py_ssize_t end = 8 <= length && length <= plen ? length : plen;
    if (!(body = PyBytes_FromStringAndSize((const char *)pl + 8, end - 8))) goto done;
    PyObject *d[5] = {tso, key, from_client ? Py_True : Py_False, body, Py_False};
    if (!(dgram = PyObject_Vectorcall(with[1], d, 5, NULL))) goto done;
    PyObject *a[3] = {with[2], route, dgram};
    r = PyObject_Vectorcall(with[0], a, 3, NULL);
done:
    Py_XDECREF(route); Py_XDECREF(key); Py_XDECREF(client); Py_XDECREF(body); Py_XDECREF(dgram);
    return r;
}

/* A batch's frame read as far as its flow key, for the flow table's prefetch (see
 * _flowcore's prefetch_raw): frame_batch's walk below on its first checks, with nothing made,
 * counted or raised; a frame that fails them is simply not prefetched. */
static void prefetch_flow(const flowcore_api_t *fc, PyObject *account, PyObject *item)
{
    PyObject *tso, *lto, *data;
    long lt;
    if (!batch_item(item, &tso, &lto, &data, &lt)) return;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    walk_t w;
    ipinfo_t ip;
    if (!locate((int)lt, d, len, &w) || (w.ethertype != ET_IPV4 && w.ethertype != ET_IPV6)) return;
    int v6 = w.ethertype == ET_IPV6, alen = v6 ? 16 : 4;
    if (ip_info(v6, d, len, w.net, &ip) || ip.fragment) return;
    const unsigned char *sa = d + w.net + (v6 ? 8 : 12);
    fc->prefetch(account, lto, data, w.nvlans, w.vlans, sa, sa + alen, alen, ip.proto, d + ip.start,
                 ip.end > ip.start ? ip.end - ip.start : 0);
}

/* Memory frame_batch reads, asked for ahead of the frames (called before frame i is handled).
 * A reader batch is 4,096 frames, more than the cache keeps from their reading to their
 * handling: each frame's tuple and bytes were misses to memory, then the flow table's slot
 * pair and record, one after the other. Each step asks for what the next one reads, two frames
 * before it reads it (a frame handled in C takes about as long as one miss): the tuple of frame
 * i + 8; the timestamp and the header bytes of frame i + 6 (its tuple asked for two frames
 * ago); the flow table's slot pair of frame i + 4 and record of frame i + 2 (prefetch_flow,
 * with `account` a C flow table, else NULL). */
#define AHEAD_TUPLE 8
#define AHEAD_BYTES 6
#define AHEAD_FLOW 4
static void prefetch_ahead(PyObject *batch, Py_ssize_t i, const flowcore_api_t *fc, PyObject *account)
{
    Py_ssize_t n = PyList_GET_SIZE(batch);
    if (i + AHEAD_TUPLE >= 0 && i + AHEAD_TUPLE < n) __builtin_prefetch(PyList_GET_ITEM(batch, i + AHEAD_TUPLE), 0, 3);
    if (i + AHEAD_BYTES >= 0 && i + AHEAD_BYTES < n) {
        PyObject *item = PyList_GET_ITEM(batch, i + AHEAD_BYTES);
        if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) >= 3) {
            PyObject *data = PyTuple_GET_ITEM(item, 2);
            __builtin_prefetch(PyTuple_GET_ITEM(item, 0), 0, 3);
            __builtin_prefetch(data, 0, 3);
            __builtin_prefetch((const char *)data + 64, 0, 3);
            __builtin_prefetch((const char *)data + 127, 0, 3);     /* (an IPv6 TCP header ends at 99) */
        }
    }
    if (account != NULL && i + AHEAD_FLOW >= 0 && i + AHEAD_FLOW < n)
        prefetch_flow(fc, account, PyList_GET_ITEM(batch, i + AHEAD_FLOW));
}

static PyObject *frame_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_Check(args[0]) || !PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) != 15) {
        PyErr_SetString(PyExc_TypeError, "frame_batch(batch: list, source, engine, state, on_frame, ctx)");
        return NULL;
    }
    PyObject *batch = args[0], *source = args[1], *engine = args[2], *state = args[3], *on_frame = args[4];
    PyObject *ctx = args[5];
    PyObject *portmap = PyTuple_GET_ITEM(ctx, 0), *ipmap = PyTuple_GET_ITEM(ctx, 1);
    PyObject *non_ip_counts = PyTuple_GET_ITEM(ctx, 6);
    PyObject *on_udp = PyTuple_GET_ITEM(ctx, 7), *on_tcp = PyTuple_GET_ITEM(ctx, 8);
    PyObject *on_ip = PyTuple_GET_ITEM(ctx, 9), *routes_ip = PyTuple_GET_ITEM(ctx, 10);
    PyObject *deliver = PyTuple_GET_ITEM(ctx, 11), *new_flow_key = PyTuple_GET_ITEM(ctx, 12);
    PyObject *new_datagram = PyTuple_GET_ITEM(ctx, 13), *udp_flow_type = PyTuple_GET_ITEM(ctx, 14);
    if (!PyBytes_Check(portmap) || PyBytes_GET_SIZE(portmap) != 65536 || !PyBytes_Check(ipmap)
            || PyBytes_GET_SIZE(ipmap) != 256 || (non_ip_counts != Py_None && !PyDict_Check(non_ip_counts))
            || !PyDict_Check(routes_ip)) {
        PyErr_SetString(PyExc_TypeError, "frame_batch: bad ctx");
        return NULL;
    }
    const unsigned char *ports = (const unsigned char *)PyBytes_AS_STRING(portmap);
    const unsigned char *ipr = (const unsigned char *)PyBytes_AS_STRING(ipmap);
    int decoding = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 2));
    int detecting = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 3));
    int probing = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 4));
    Py_ssize_t max_macs = PyLong_AsSsize_t(PyTuple_GET_ITEM(ctx, 5));
    if (decoding < 0 || detecting < 0 || probing < 0 || (max_macs == -1 && PyErr_Occurred())) return NULL;

    /* The source's tables (fixed objects for the source's life). */
    PyObject *tcp = NULL, *conns = NULL, *tcp_counters = NULL, *udp_flows = NULL, *expected = NULL,
        *macs = NULL, *flows = NULL, *account = NULL, *dedup_o = NULL, *result = NULL, *state_name = NULL;
    fcount_t c;
    memset(&c, 0, sizeof c);
    Py_ssize_t last_c = -1;         /* the last frame handled here */
    connslots_t cs = {NULL, -1, -1};
    if (!(tcp = PyObject_GetAttrString(state, "tcp")) || !(conns = PyObject_GetAttrString(tcp, "connections"))
            || !(tcp_counters = PyObject_GetAttrString(tcp, "counters"))
            || !(udp_flows = PyObject_GetAttrString(state, "udp_flows"))
            || !(expected = PyObject_GetAttrString(state, "expected"))
            || !(macs = PyObject_GetAttrString(state, "macs"))
            || !(flows = PyObject_GetAttrString(state, "flows"))
            || !(dedup_o = PyObject_GetAttrString(state, "dedup"))
            || !(state_name = PyObject_GetAttrString(state, "name")))
        goto done;
    if (!PyDict_Check(conns) || !PyDict_Check(udp_flows) || !PyDict_Check(expected) || !PyDict_Check(macs)
            || (dedup_o != Py_None && !PyObject_TypeCheck(dedup_o, &DedupType))) {
        PyErr_SetString(PyExc_TypeError, "frame_batch: unexpected source tables");
        goto done;
    }
#if !BATCH_DEDUP
    if (dedup_o != Py_None) {
        PyErr_SetString(PyExc_TypeError, "frame_batch: no batch dedup on this build");
        goto done;
    }
#endif
    if (flows != Py_None && !(account = PyObject_GetAttrString(flows, "account"))) goto done;
    flowcore_api_t *fc = account ? get_flowcore_api() : NULL;
    int raw_account = fc != NULL && Py_TYPE(account) == fc->table_type;
    DedupObject *dd;
    Py_uhash_t source_lane, none_lane;
    if (batch_dedup(dedup_o, source, &dd, &source_lane, &none_lane) < 0) goto done;
    double until;
    {
        PyObject *nt = PyObject_GetAttr(state, S_next_tick);
        if (!nt) goto done;
        until = PyFloat_AsDouble(nt);
        Py_DECREF(nt);
        if (until == -1.0 && PyErr_Occurred()) goto done;
    }

    PyObject *ahead = raw_account ? account : NULL;
    for (Py_ssize_t k = -AHEAD_TUPLE; k < 0; k++) prefetch_ahead(batch, k, fc, ahead);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        int python = 1;             /* the frame goes to on_frame */
        prefetch_ahead(batch, i, fc, ahead);
        PyObject *tso = NULL, *lto = NULL, *data = NULL;
        double ts = 0;
        long lt = 0;
        const unsigned char *d = NULL;
        Py_ssize_t len = 0, plen = 0;
        const unsigned char *pl = NULL;
        walk_t w;
        ipinfo_t ip;
        int v6 = 0, kind = 0;       /* kind: 1 non-IP, 2 IP done, 3 untracked TCP, 4 tracked TCP */
        int call = 0;               /* CALL_*: the engine's transport step after the bookkeeping */
        unsigned sport = 0, dport = 0, flags = 0;
        uint32_t ack = 0;
        Py_ssize_t data_len = 0;
        PyObject *src = NULL, *dst = NULL, *key = NULL, *conn = NULL;
        int src_first = 0;

        if (!batch_item(item, &tso, &lto, &data, &lt)) goto decided;
        ts = PyFloat_AS_DOUBLE(tso);
        if (!(ts < until)) goto decided;                    /* a tick is due */
        d = (const unsigned char *)PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
        if (!locate((int)lt, d, len, &w)) goto decided;    /* link.* malformed */
        if (w.ethertype != ET_IPV4 && w.ethertype != ET_IPV6) {
            if (is_shim(w.ethertype) || non_ip_counts == Py_None) goto decided;     /* peel_link's */
            kind = 1;
            python = 0;
            goto decided;
        }
        v6 = w.ethertype == ET_IPV6;
        if (ip_info(v6, d, len, w.net, &ip) || ip.fragment) goto decided;
        plen = ip.end > ip.start ? ip.end - ip.start : 0;
        pl = d + ip.start;
        if (ip.proto == 47) goto decided;                   /* GRE: a tunnel */
        {
            int alen = v6 ? 16 : 4;
            const unsigned char *sa = d + w.net + (v6 ? 8 : 12), *da = sa + alen;
            if (ip.proto == 17) {
                if (plen < 8) goto decided;                     /* udp.truncated */
                sport = u16(pl); dport = u16(pl + 2);
                if (ports[dport] & PM_TUNNEL) goto decided;
                if (decoding) {
                    if (((ports[sport] | ports[dport]) & PM_UDP_ROUTE) || probing || PyDict_GET_SIZE(expected)) {
                        call = CALL_UDP;
                        if (PyDict_GET_SIZE(udp_flows)) {       /* a routed flow already held: CALL_UDP_FLOW */
                            src_first = endpoint_first(sa, sport, da, dport, alen);
                            if (!(key = conv_key(sa, sport, da, dport, alen, src_first))) goto fail;
                            PyObject *f = PyDict_GetItemWithError(udp_flows, key);
                            if (!f && PyErr_Occurred()) goto fail;
                            if (f && Py_TYPE(f) == (PyTypeObject *)udp_flow_type) {
                                PyObject *route = PyObject_GetAttr(f, S_route);
                                if (!route) goto fail;
                                if (route != Py_None) {
                                    call = CALL_UDP_FLOW;
                                    conn = Py_NewRef(f);    /* (held in conn: released with it) */
                                }
                                Py_DECREF(route);
                            }
                        }
                    } else if (PyDict_GET_SIZE(udp_flows)) {
                        src_first = endpoint_first(sa, sport, da, dport, alen);
                        if (!(key = conv_key(sa, sport, da, dport, alen, src_first))) goto fail;
                        int has = PyDict_Contains(udp_flows, key);
                        if (has < 0) goto fail;
                        if (has) call = CALL_UDP;
                    }
                }
                kind = 2;
            } else if (ip.proto == 6) {
                if (plen < 20) goto decided;
                Py_ssize_t hl = (pl[12] >> 4) * 4;
                if (hl < 20 || hl > plen) goto decided;
                sport = u16(pl); dport = u16(pl + 2);
                ack = ((uint32_t)pl[8] << 24) | ((uint32_t)pl[9] << 16) | ((uint32_t)pl[10] << 8) | pl[11];
                flags = pl[13];
                data_len = plen - hl;
                if (!decoding) kind = 3;
                else {
                    src_first = endpoint_first(sa, sport, da, dport, alen);
                    if (!(key = conv_key(sa, sport, da, dport, alen, src_first))) goto fail;
                    conn = PyDict_GetItemWithError(conns, key);
                    Py_XINCREF(conn);
                    if (!conn) {
                        if (PyErr_Occurred()) goto fail;
                        if ((ports[sport] | ports[dport]) & PM_TCP_ROUTE) {
                            /* TCPTable.admits opens no connection for an empty segment
                             * without SYN (a late ACK or FIN): nothing is counted */
                            if (data_len || (flags & 0x02)) call = CALL_TCP;
                            else kind = 2;
                        } else if (data_len && detecting) call = CALL_TCP;     /* the detectors' */
                        else kind = 3;
                    } else if (flags & 0x07) call = CALL_TCP;      /* SYN, FIN, RST: the connection's own */
                    else {
                        connslots_find(&cs, conn);
                        PyObject **bp = conn_slot(&cs, conn, cs.bypassed);
                        /* Its last_ts float, read at the end of this frame (kind 4): an
                         * object made a while ago, in memory by now; asked for here, it
                         * arrives while the frame's link header and flow are done */
                        PyObject **tp = conn_slot(&cs, conn, cs.last_ts);
                        if (tp && *tp) __builtin_prefetch(*tp, 1, 3);
                        PyObject *b = bp ? *bp : NULL;
                        int bypassed = b == Py_True ? 1 : b == Py_False ? 0 : attr_true(conn, S_bypassed);
                        if (bypassed < 0) goto fail;
                        if (!bypassed) {
                            if (data_len) call = CALL_TCP;          /* its decoder's bytes */
                            else if (flags & 0x10) {                /* the ACK may give up a hole: _on_ack */
                                int cf = attr_true(conn, S_client_first);
                                if (cf < 0) goto fail;
                                PyObject *other = PyObject_GetAttr(conn, (src_first == cf) ? S_server : S_client);
                                if (!other) goto fail;
                                PyObject *nxt = PyObject_GetAttr(other, S_nxt);
                                long long n = nxt ? PyLong_AsLongLong(nxt) : -1;
                                Py_XDECREF(nxt);
                                int started = 0, ended = 0;
                                if (!PyErr_Occurred() && n != (long long)ack) {
                                    started = attr_true(other, S_started);
                                    ended = started > 0 ? attr_true(other, S_ended) : 0;
                                }
                                Py_DECREF(other);
                                if (PyErr_Occurred()) goto fail;
                                if (started && !ended) call = CALL_TCP;
                            }
                        }
                        if (!call) kind = 4;
                    }
                    /* Engine._on_tcp would look the connection up again and hand the segment
                     * to it, unless a pure SYN may restart it (is_restarted_by): its checks
                     * are the ones above, so call the connection's `segment` here. */
                    if (call == CALL_TCP && conn && (flags & 0x12) != 0x02) call = CALL_SEGMENT;
                }
            } else if (decoding && ipr[ip.proto & 0xFF]) call = CALL_IP;
            else kind = 2;
            python = 0;
            /* Handled here: from now on what on_frame does, in its order. */
            c.packets++;
            c.bytes += len;
            last_c = i;
#if BATCH_DEDUP
            if (dd) {
                int dup = batch_duplicate(dd, source_lane, none_lane, &w, v6, d, ip.proto, pl, plen, ts);
                if (dup < 0) goto fail;
                if (dup) goto next;
            }
#endif
            /* the addresses as objects: only for the flow table and the transport step */
            if ((call || (account && !raw_account)) && (!(src = PyBytes_FromStringAndSize((const char *)sa, alen))
                                      || !(dst = PyBytes_FromStringAndSize((const char *)da, alen))))
                goto fail;
            if (decoding) {             /* the conversation's link header: state.macs */
                /* keyed by the two addresses as they lie in the IP header (source, then
                 * destination), valued by the link type (4 bytes, big-endian) and the header */
                PyObject *pair = PyBytes_FromStringAndSize((const char *)sa, 2 * alen);
                if (!pair) goto fail;
                Py_ssize_t head_len = w.net + 1 < len ? w.net + 1 : len;
                PyObject *old = PyDict_GetItemWithError(macs, pair);
                if (!old && PyErr_Occurred()) { Py_DECREF(pair); goto fail; }
                unsigned char lt_be[4] = {0, 0, (unsigned char)(lt >> 8), (unsigned char)lt};
                if (old && PyBytes_CheckExact(old) && PyBytes_GET_SIZE(old) == head_len + 4
                        && memcmp(PyBytes_AS_STRING(old), lt_be, 4) == 0
                        && memcmp(PyBytes_AS_STRING(old) + 4, d, head_len) == 0) {
                    Py_DECREF(pair);    /* the same header again: storing it changes nothing */
                    goto macs_done;
                }
                int has = old != NULL;
                if (!has && PyDict_GET_SIZE(macs) >= max_macs) {
                    PyObject *r = PyObject_CallMethodOneArg(macs, S_popitem, Py_False);
                    if (!r) { Py_DECREF(pair); goto fail; }
                    Py_DECREF(r);
                    c.mac_evicted++;
                }
                PyObject *value = PyBytes_FromStringAndSize(NULL, head_len + 4);
                if (!value) { Py_DECREF(pair); goto fail; }
                memcpy(PyBytes_AS_STRING(value), lt_be, 4);
                memcpy(PyBytes_AS_STRING(value) + 4, d, head_len);
                int r = PyObject_SetItem(macs, pair, value);
                Py_DECREF(pair); Py_DECREF(value);
                if (r < 0) goto fail;
            }
        macs_done:;
            PyObject *payload = NULL;
            if ((call && call != CALL_SEGMENT) || (account && !raw_account)) {
                payload = PyBytes_FromStringAndSize((const char *)pl, plen);
                if (!payload) goto fail;
            }
            if (raw_account) {          /* the same call, in C (beat/_flowapi.h) */
                if (fc->account(account, tso, lto, data, w.nvlans, w.vlans, sa, da, alen, ip.proto, pl, plen, payload) < 0) {
                    Py_XDECREF(payload);
                    goto fail;
                }
            } else if (account) {       /* flows.account(ts, linktype, frame, vlans, src, dst, proto, payload, ()) */
                PyObject *vlans = PyTuple_New(w.nvlans);
                if (!vlans) { Py_DECREF(payload); goto fail; }
                for (int k = 0; k < w.nvlans; k++) {
                    PyObject *v = PyLong_FromLong(w.vlans[k]);
                    if (!v) { Py_DECREF(vlans); Py_DECREF(payload); goto fail; }
                    PyTuple_SET_ITEM(vlans, k, v);
                }
                PyObject *proto_o = PyLong_FromLong(ip.proto);
                PyObject *outer = PyTuple_New(0);
                PyObject *r = NULL;
                if (proto_o && outer) {
                    PyObject *a[9] = {tso, lto, data, vlans, src, dst, proto_o, payload, outer};
                    r = PyObject_Vectorcall(account, a, 9, NULL);
                }
                Py_DECREF(vlans); Py_XDECREF(proto_o); Py_XDECREF(outer);
                if (!r) { Py_DECREF(payload); goto fail; }
                Py_DECREF(r);
            }
            if (call) {                 /* on_frame's dispatch: the engine's own transport step */
                PyObject *frame = PyTuple_Pack(2, lto, data), *r = NULL;
                if (frame && PyObject_SetAttr(engine, S_frame, frame) == 0
                        && PyObject_SetAttr(engine, S_tunnel, Py_None) == 0) {
                    if (call == CALL_SEGMENT) {
                        /* _on_tcp's `self.delivered += 1; conn.segment(src_first ==
                         * conn.client_first, seq, ack, flags, data, ts)` */
                        int cf = attr_true(conn, S_client_first);
                        uint32_t seq = ((uint32_t)pl[4] << 24) | ((uint32_t)pl[5] << 16) | ((uint32_t)pl[6] << 8) | pl[7];
                        PyObject *seq_o = PyLong_FromUnsignedLong(seq), *ack_o = PyLong_FromUnsignedLong(ack),
                            *flags_o = PyLong_FromLong(flags),
                            *data_o = PyBytes_FromStringAndSize((const char *)pl + plen - data_len, data_len);
                        if (cf >= 0 && seq_o && ack_o && flags_o && data_o) {
                            c.delivered++;
                            PyObject *a[7] = {conn, (src_first == cf) ? Py_True : Py_False, seq_o, ack_o, flags_o,
                                              data_o, tso};
                            r = PyObject_VectorcallMethod(S_segment, a, 7, NULL);
                        }
                        Py_XDECREF(seq_o); Py_XDECREF(ack_o); Py_XDECREF(flags_o); Py_XDECREF(data_o);
                    } else if (call == CALL_IP) {
                        PyObject *proto_o = PyLong_FromLong(ip.proto);
                        PyObject *route = proto_o ? PyDict_GetItemWithError(routes_ip, proto_o) : NULL;
                        if (route && (ip.proto == 1 || ip.proto == 58) && plen >= 2) {
                            PyObject *const icmp[6] = {deliver, new_flow_key, new_datagram, state,
                                                       state_name, route};
                            r = deliver_icmp(icmp, tso, ip.proto, sa, da, alen, payload);
                        } else if (route) {
                            PyObject *a[7] = {state, route, tso, src, dst, proto_o, payload};
                            r = PyObject_Vectorcall(on_ip, a, 7, NULL);
                        } else if (!PyErr_Occurred())
                            PyErr_SetString(PyExc_KeyError, "frame_batch: no route for the IP protocol");
                        Py_XDECREF(proto_o);
                    } else {
                        if (call == CALL_UDP_FLOW) {
                            PyObject *const udp[3] = {deliver, new_datagram, state};
                            r = deliver_udp(udp, conn, tso, sport, src, payload);
                        }
                        if (call != CALL_UDP_FLOW || r == Py_NotImplemented) {
                            Py_XDECREF(r);
                            PyObject *a[5] = {state, tso, src, dst, payload};
                            r = PyObject_Vectorcall(call == CALL_TCP ? on_tcp : on_udp, a, 5, NULL);
                        }
                    }
                }
                Py_XDECREF(frame);
                Py_XDECREF(payload);
                if (!r) goto fail;
                Py_DECREF(r);
                goto next;
            }
            Py_XDECREF(payload);
            if (kind == 3) c.untracked++;
            else if (kind == 4) {       /* TCPConnection.segment of a bypassed connection / a pure ACK */
                c.delivered++;
                PyObject **lp = conn_slot(&cs, conn, cs.last_ts);
                double last_ts;
                if (lp && *lp && PyFloat_CheckExact(*lp)) last_ts = PyFloat_AS_DOUBLE(*lp);
                else {
                    lp = NULL;
                    PyObject *last = PyObject_GetAttr(conn, S_last_ts);
                    if (!last) goto fail;
                    last_ts = PyFloat_AsDouble(last);
                    Py_DECREF(last);
                    if (last_ts == -1.0 && PyErr_Occurred()) goto fail;
                }
                if (ts < last_ts) c.behind++;
                else if (lp) {          /* what the slot's setter does */
                    PyObject *old = *lp;
                    Py_INCREF(tso);
                    *lp = tso;
                    Py_DECREF(old);
                } else if (PyObject_SetAttr(conn, S_last_ts, tso) < 0) goto fail;
                c.segments++;
                if (data_len) c.bypassed++;
            }
        }
    next:
        Py_XDECREF(src); Py_XDECREF(dst); Py_XDECREF(key); Py_XDECREF(conn);
        continue;
    decided:
        Py_XDECREF(src); Py_XDECREF(dst); Py_XDECREF(key); Py_XDECREF(conn);
        src = dst = key = conn = NULL;
        if (!python) {                  /* non-IP: on_frame's count_non_ip */
            c.packets++;
            c.bytes += len;
            c.non_ip++;
            last_c = i;
            PyObject *et = PyLong_FromUnsignedLong(w.ethertype);
            if (!et) goto done;
            PyObject *old = PyDict_GetItemWithError(non_ip_counts, et);
            long long n = 0;
            if (old) n = PyLong_AsLongLong(old);
            if (PyErr_Occurred()) { Py_DECREF(et); goto done; }
            PyObject *nv = PyLong_FromLongLong(n + 1);
            int r = nv ? PyDict_SetItem(non_ip_counts, et, nv) : -1;
            Py_XDECREF(nv); Py_DECREF(et);
            if (r < 0) goto done;
            continue;
        }
        /* on_frame's: counters first (it may read them), then the frame itself. */
        if (flush_counts(engine, tcp_counters, &c) < 0) goto done;
        last_c = -1;
        {
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) {
                PyErr_SetString(PyExc_TypeError, "frame_batch: batch items are (ts, linktype, data, ...)");
                goto done;
            }
            PyObject *a[4] = {PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2), source};
            PyObject *r = PyObject_Vectorcall(on_frame, a, 4, NULL);
            if (!r) goto done;
            Py_DECREF(r);
            PyObject *nt = PyObject_GetAttr(state, S_next_tick);
            if (!nt) goto done;
            until = PyFloat_AsDouble(nt);
            Py_DECREF(nt);
            if (until == -1.0 && PyErr_Occurred()) goto done;
        }
        continue;
    fail:
        Py_XDECREF(src); Py_XDECREF(dst); Py_XDECREF(key); Py_XDECREF(conn);
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (tcp_counters) {
        PyObject *et, *ev, *etb;
        int failed = result == NULL;
        if (failed) PyErr_Fetch(&et, &ev, &etb);
        int r = flush_counts(engine, tcp_counters, &c);
        if (r == 0 && last_c >= 0) {    /* on_frame leaves the frame it took last */
            PyObject *item = PyList_GET_ITEM(batch, last_c);
            PyObject *frame = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2));
            r = frame ? PyObject_SetAttr(engine, S_frame, frame) : -1;
            Py_XDECREF(frame);
            if (r == 0) r = PyObject_SetAttr(engine, S_tunnel, Py_None);
        }
        if (failed) PyErr_Restore(et, ev, etb);
        else if (r < 0) Py_CLEAR(result);
    }
    Py_XDECREF(tcp); Py_XDECREF(conns); Py_XDECREF(tcp_counters); Py_XDECREF(udp_flows);
    Py_XDECREF(expected); Py_XDECREF(macs); Py_XDECREF(flows); Py_XDECREF(account); Py_XDECREF(dedup_o);
    Py_XDECREF(state_name);
    return result;
}

/* ---- link_seen: Engine._link_of's look-up in the source's `macs` ------------- */
/* The link header remembered for a transaction's conversation: `macs` is keyed by the
 * packed sender + receiver addresses of a frame (the frame loop's `pair`), the
 * transaction names its client and server as text. Returns (header, True) for the
 * latest frame the client sent, else (header, False) for the server's, None when
 * neither is there or an address text is none (what ip.ip_packed's OSError means);
 * engine._link_seen_python is the reference (tests/beat/test_engine_link.py). */
static int pack_text(PyObject *text, unsigned char *out, int *alen)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (!s) return -1;                                  /* not a str, or lone surrogates */
    int len = ip_pack(s, (size_t)n, out);
    if (len < 0) {
        PyErr_SetString(PyExc_ValueError, "embedded null character");   /* socket.inet_pton's */
        return -1;
    }
    *alen = len;
    return len > 0;
}

static PyObject *py_link_seen(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "link_seen(macs: dict, client_ip: str, server_ip: str)");
        return NULL;
    }
    unsigned char client[16], server[16], key[32];
    int clen = 0, slen = 0, r;
    if ((r = pack_text(args[1], client, &clen)) <= 0 || (r = pack_text(args[2], server, &slen)) <= 0) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    for (int by_client = 1; by_client >= 0; by_client--) {
        memcpy(key, by_client ? client : server, by_client ? clen : slen);
        memcpy(key + (by_client ? clen : slen), by_client ? server : client, by_client ? slen : clen);
        PyObject *k = PyBytes_FromStringAndSize((const char *)key, clen + slen);
        if (!k) return NULL;
        PyObject *seen = PyDict_GetItemWithError(args[0], k);      /* borrowed */
        Py_DECREF(k);
        if (seen) return PyTuple_Pack(2, seen, by_client ? Py_True : Py_False);
        if (PyErr_Occurred()) return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_community_id(PyObject *self, PyObject *args)
{
    int proto, sport, dport;
    Py_buffer s, d;
    if (!PyArg_ParseTuple(args, "iy*iy*i", &proto, &s, &sport, &d, &dport)) return NULL;
    if (s.len != d.len || (s.len != 4 && s.len != 16) || sport < 0 || sport > 65535 || dport < 0 || dport > 65535) {
        PyBuffer_Release(&s); PyBuffer_Release(&d);
        PyErr_SetString(PyExc_ValueError, "community_id: 4 or 16 byte addresses, 16-bit ports");
        return NULL;
    }
    char cid[30];
    community_id(proto, s.buf, d.buf, (int)s.len, sport, dport, cid);
    PyBuffer_Release(&s); PyBuffer_Release(&d);
    return PyUnicode_FromStringAndSize(cid, 30);
}

/* iso_time(ts) -> str: decoders/api.py iso_time for 0 <= ts < 8e9 (the text this file
 * writes for @timestamp); other values (before 1970, NaN, past year 2223) go to the
 * Python function given to set_iso_time_fallback, which is the reference. */
static PyObject *iso_fallback = NULL;

static PyObject *py_iso_time(PyObject *self, PyObject *arg)
{
    double ts = PyFloat_AsDouble(arg);
    if (ts == -1.0 && PyErr_Occurred()) return NULL;
    if (!(ts >= 0.0 && ts < 8e9)) {
        if (iso_fallback == NULL) {
            PyErr_SetString(PyExc_ValueError, "iso_time: out of range and no fallback set");
            return NULL;
        }
        return PyObject_CallOneArg(iso_fallback, arg);
    }
    double secf = floor(ts);
    long long seconds = (long long)secf;
    long long micros = (long long)nearbyint((ts - secf) * 1e6);
    if (micros >= 1000000) { seconds += 1; micros -= 1000000; }
    char buf[27];
    out_t o = {buf, buf + sizeof buf};
    put_second(&o, seconds);
    *o.p++ = '.';
    for (int i = 5; i >= 0; i--) { o.p[i] = (char)('0' + micros % 10); micros /= 10; }
    o.p += 6;
    *o.p++ = 'Z';
    return PyUnicode_FromStringAndSize(buf, 27);
}

static PyObject *py_set_iso_time_fallback(PyObject *self, PyObject *fn)
{
    Py_XDECREF(iso_fallback);
    Py_INCREF(fn);
    iso_fallback = fn;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"iso_time", py_iso_time, METH_O,
     "iso_time(ts) -> str: RFC 3339 UTC with microseconds, as decoders/api.py iso_time"},
    {"set_iso_time_fallback", py_set_iso_time_fallback, METH_O,
     "set_iso_time_fallback(fn): the Python iso_time, for timestamps outside 1970..2223"},
    {"header_walk", (PyCFunction)(void (*)(void))header_walk, METH_FASTCALL,
     "header_walk(linktype, data) -> None | (ethertype, net_offset, vlans, proto, src, dst, transport_offset)"},
    {"packet_doc", (PyCFunction)(void (*)(void))packet_doc, METH_FASTCALL,
     "packet_doc(ts, linktype, data, capture_json, id_prefix, n, ctx) -> None | (doc_id, json)"},
    {"packet_batch", (PyCFunction)(void (*)(void))packet_batch, METH_FASTCALL,
     "packet_batch(batch, start, limit, until_ts, capture_json, id_prefix, n, ctx, dedup, source, "
     "fragment, out) -> (stop, bytes, tcp_untracked): Engine.on_batch's frames"},
    {"frame_batch", (PyCFunction)(void (*)(void))frame_batch, METH_FASTCALL,
     "frame_batch(batch, source, engine, state, on_frame, ctx) -> None: Engine.on_batch's frames "
     "with flows and decoders (beat/frameloop.py)"},
    {"locate_ip", (PyCFunction)(void (*)(void))locate_ip, METH_FASTCALL,
     "locate_ip(linktype, data) -> reason | (ethertype, net_offset, vlans, parsed): framecore.locate_ip"},
    {"pcap_records", (PyCFunction)(void (*)(void))pcap_records, METH_FASTCALL,
     "pcap_records(buf, pos, little, scale, max_caplen, frac_max, linktype, max_count) -> "
     "([(ts, linktype, data, wire_len)], pos, last_sec): pcapfile.pcap_records_python"},
    {"link_seen", (PyCFunction)(void (*)(void))py_link_seen, METH_FASTCALL,
     "link_seen(macs, client_ip, server_ip) -> (header, sent_by_client) | None: Engine._link_of's look-up"},
    {"community_id", py_community_id, METH_VARARGS,
     "community_id(proto, saddr, sport, daddr, dport) -> str: Community ID v1, seed 0"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wirebeat._speedups",
                                    "Optional C accelerator of the per-packet path (see beat/_speedups.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__speedups(void)
{
    struct { PyObject **slot; const char *text; } reasons[] = {
        {&R_LINK_TRUNCATED, "link.truncated"}, {&R_LINK_UNSUPPORTED, "link.unsupported_linktype"},
        {&R_LINK_VLAN_DEEP, "link.vlan_too_deep"}, {&R_IP_TRUNCATED, "ip.truncated"},
        {&R_IP_BAD_VERSION, "ip.bad_version"}, {&R_IP_BAD_HLEN, "ip.bad_header_length"},
        {&R_IP_TOO_MANY_EXT, "ip.too_many_extension_headers"},
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (!*reasons[i].slot && !(*reasons[i].slot = PyUnicode_InternFromString(reasons[i].text)))
            return NULL;
    struct { PyObject **slot; const char *text; } names[] = {
        {&S_packets, "packets"}, {&S_bytes, "bytes"}, {&S_non_ip, "non_ip"},
        {&S_tcp_untracked, "tcp_untracked"}, {&S_delivered, "delivered"},
        {&S_mac_evicted, "mac_pairs_evicted"}, {&S_segments, "segments"},
        {&S_segments_bypassed, "segments_bypassed"}, {&S_timestamps_behind, "timestamps_behind"},
        {&S_frame, "frame"}, {&S_tunnel, "tunnel"}, {&S_next_tick, "next_tick"},
        {&S_bypassed, "bypassed"}, {&S_last_ts, "last_ts"}, {&S_client_first, "client_first"},
        {&S_client, "client"}, {&S_server, "server"}, {&S_nxt, "nxt"}, {&S_started, "started"},
        {&S_ended, "ended"}, {&S_popitem, "popitem"}, {&S_segment, "segment"},
        {&S_icmp, "icmp"}, {&S_ipv6_icmp, "ipv6-icmp"}, {&S_route, "route"}, {&S_key, "key"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].slot && !(*names[i].slot = PyUnicode_InternFromString(names[i].text)))
            return NULL;
    if (PyType_Ready(&DedupType) < 0 || PyType_Ready(&MakerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Dedup", (PyObject *)&DedupType) < 0
            || PyModule_AddObjectRef(m, "Maker", (PyObject *)&MakerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
