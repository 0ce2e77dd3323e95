/* wirebeat._nfcore: optional C accelerator for NetFlow/IPFIX data sets.
 *
 * One call per data set of a fixed-length template turns every record into
 * its whole JSON document text and its _id, as the pure-Python path
 * (decoders/netflow.py: Template.records, NetflowDecoder._transaction,
 * _flow_times, whole_text; beat/document.py: _flow_text, document_id_from)
 * makes them. That path stays the reference: tests/beat/test_nfcore.py runs
 * both on the same exports, hostile ones included, and compares the bytes;
 * WIREBEAT_PURE_PYTHON=1 turns this module off.
 *
 * Which templates come here is decided in Python (netflow._c_plan): fixed
 * length, flow records (no options), element types unsigned / signed / IPv4 /
 * IPv6 / MAC / octets as hex / boolean / dateTimeSeconds /
 * dateTimeMilliseconds, no unknown or repeated elements, no RFC 6313 lists, no
 * time elements other than sysUpTime-relative, seconds and milliseconds. A
 * record this code does not cover (ICMP, a protocol number past 255, source
 * and destination of two address families, a time outside years 1970..9999)
 * comes back as its index, and the caller decodes that one in Python.
 *
 * Entry point:
 *   records(data, start, count, size, plan, consts) -> list
 *     data[start:start + count * size]: the records. plan: tuple of (offset,
 *     length, type, role, key) per field, key the field's `"name":` text.
 *     consts: (export_ts, uptime or -1, sampling or 0, pre, mid, post,
 *     key_head, key_tail, exporter_ip, transports).
 *     Each list item is (doc_id, json_bytes), or the record's index (int).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* field types (netflow._C_TYPES) */
enum { T_UNSIGNED = 0, T_SIGNED, T_IPV4, T_IPV6, T_MAC, T_HEX, T_BOOL, T_DATE_S, T_DATE_MS };
/* roles: what _transaction and _flow_times read of a record (netflow._C_ROLES) */
enum { R_NONE = 0, R_SRC4, R_SRC6, R_DST4, R_DST6, R_SPORT, R_DPORT, R_PROTO, R_PKT_DELTA,
       R_PKT_TOTAL, R_OCT_DELTA, R_OCT_TOTAL, R_FIRST_UP, R_LAST_UP, R_START_MS, R_END_MS,
       R_START_S, R_END_S, R_COUNT };

#define MAX_FIELDS 512
#define MAX_SECONDS 253402300799LL     /* 9999-12-31T23:59:59: _parse_iso's limit */

/* ---- a growable byte buffer ------------------------------------------------- */

typedef struct { char *p; size_t n, cap; int failed; } Buf;

static void buf_grow_slow(Buf *b, size_t more) {
    if (b->failed) return;
    size_t cap = b->cap ? b->cap : 2048;
    while (cap < b->n + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) { b->failed = 1; return; }
    b->p = p;
    b->cap = cap;
}
static inline void buf_grow(Buf *b, size_t more) {
    if (b->n + more > b->cap) buf_grow_slow(b, more);
}
static inline void put(Buf *b, const char *s, size_t n) {
    buf_grow(b, n);
    if (b->failed) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static inline void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }
static void put_u64(Buf *b, uint64_t v) {
    char tmp[24]; int i = 24;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    put(b, tmp + i, (size_t)(24 - i));
}
static void put_i64(Buf *b, int64_t v) {
    if (v < 0) { put(b, "-", 1); put_u64(b, (uint64_t)0 - (uint64_t)v); }
    else put_u64(b, (uint64_t)v);
}

/* ---- times: iso_time() of decoders/api.py --------------------------------------- */

/* Days since 1970-01-01 -> civil date (proleptic Gregorian). */
static void civil(int64_t days, int64_t *y, unsigned *m, unsigned *d) {
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    unsigned doe = (unsigned)(days - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void digits(char *out, unsigned v, int n) {
    while (n--) { out[n] = (char)('0' + v % 10); v /= 10; }
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" (27 chars and a NUL) of seconds and microseconds; 0 past
   the range. */
static int iso_parts(int64_t sec, long micros, char out[28]) {
    if (sec < 0 || sec > MAX_SECONDS || micros < 0 || micros > 999999) return 0;
    int64_t y; unsigned mo, d;
    civil(sec / 86400, &y, &mo, &d);
    unsigned s = (unsigned)(sec % 86400);
    memcpy(out, "0000-00-00T00:00:00.000000Z", 28);
    digits(out, (unsigned)y, 4);
    digits(out + 5, mo, 2);
    digits(out + 8, d, 2);
    digits(out + 11, s / 3600, 2);
    digits(out + 14, (s / 60) % 60, 2);
    digits(out + 17, s % 60, 2);
    digits(out + 20, (unsigned)micros, 6);
    return 1;
}

/* iso_time(ts) for a float: seconds = floor, micros rounded half-even as round(). Also the
   value _parse_iso() reads back from that text (whole seconds + micros / 1e6). */
static int iso_double(double ts, char out[28], double *parsed) {
    if (!(ts >= 0.0) || ts > (double)MAX_SECONDS + 1.0) return 0;
    double fsec = floor(ts);
    int64_t sec = (int64_t)fsec;
    long micros = (long)nearbyint((ts - fsec) * 1e6);
    if (micros >= 1000000) { sec += 1; micros -= 1000000; }
    if (!iso_parts(sec, micros, out)) return 0;
    if (parsed) *parsed = (double)sec + (double)micros / 1e6;
    return 1;
}

#include "_blake2b.h"     /* blake2b(), id_text(): the document _id */

/* ---- SHA-1 (FIPS 180-4) and Community ID v1, for network.community_id -------------- */

static inline uint32_t rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

/* SHA-1 of a message of at most 55 bytes (one block: a Community ID tuple is 14 or 38). */
static void sha1_short(const uint8_t *msg, size_t n, uint8_t out[20]) {
    uint8_t block[64] = {0};
    uint32_t w[80];
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    memcpy(block, msg, n);
    block[n] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) block[63 - i] = (uint8_t)(bits >> (8 * i));
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16)
               | ((uint32_t)block[4 * i + 2] << 8) | block[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rotl32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
        uint32_t t = rotl32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rotl32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* "1:" + base64 of the SHA-1 of seed 0, the smaller endpoint first, protocol, ports
   (community_id_packed of beat/document.py for TCP and UDP): 30 characters. */
static void community_id(unsigned proto, const uint8_t *sa, unsigned sp, const uint8_t *da,
                         unsigned dp, size_t alen, char out[30]) {
    static const char *A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int c = memcmp(sa, da, alen);
    if (!(c < 0 || (c == 0 && sp < dp))) {
        const uint8_t *t = sa; sa = da; da = t;
        unsigned u = sp; sp = dp; dp = u;
    }
    uint8_t m[38], d[21];
    size_t n = 0;
    m[n++] = 0; m[n++] = 0;
    memcpy(m + n, sa, alen); n += alen;
    memcpy(m + n, da, alen); n += alen;
    m[n++] = (uint8_t)proto; m[n++] = 0;
    m[n++] = (uint8_t)(sp >> 8); m[n++] = (uint8_t)sp;
    m[n++] = (uint8_t)(dp >> 8); m[n++] = (uint8_t)dp;
    sha1_short(m, n, d);
    d[20] = 0;
    out[0] = '1'; out[1] = ':';
    for (int i = 0, o = 2; i < 21; i += 3, o += 4) {
        uint32_t w = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8) | d[i + 2];
        out[o] = A[w >> 18]; out[o + 1] = A[(w >> 12) & 63];
        out[o + 2] = A[(w >> 6) & 63]; out[o + 3] = A[w & 63];
    }
    out[29] = '=';          /* 20 bytes: 27 characters and one pad */
}

/* ---- the plan ------------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t offset, length;
    int type, role;
    const char *key;
    Py_ssize_t key_len;
} Field;

static int read_plan(PyObject *plan, Field *fields, Py_ssize_t *n, Py_ssize_t size) {
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "plan: a tuple of at most 512 fields");
        return 0;
    }
    *n = PyTuple_GET_SIZE(plan);
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PyTuple_GET_ITEM(plan, i);
        Field *f = &fields[i];
        PyObject *key;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "nniiS", &f->offset, &f->length,
                                                      &f->type, &f->role, &key))
            return 0;
        f->key = PyBytes_AS_STRING(key);
        f->key_len = PyBytes_GET_SIZE(key);
        int ok = f->offset >= 0 && f->length >= 1 && f->offset + f->length <= size
                 && f->role >= 0 && f->role < R_COUNT;
        switch (f->type) {
        case T_UNSIGNED: case T_SIGNED: case T_BOOL: case T_DATE_S: case T_DATE_MS:
            ok = ok && f->length <= 8; break;
        case T_IPV4: ok = ok && f->length == 4; break;
        case T_IPV6: ok = ok && f->length == 16; break;
        case T_MAC: ok = ok && f->length == 6; break;
        case T_HEX: break;
        default: ok = 0;
        }
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "plan: bad field %zd", i);
            return 0;
        }
    }
    return 1;
}

/* ---- one record ------------------------------------------------------------------ */

typedef struct {
    int has[R_COUNT];
    uint64_t num[R_COUNT];          /* unsigned roles */
    double when[R_COUNT];           /* date roles: the value _parse_iso reads back */
    char text[R_COUNT][48];         /* address and date roles: their text */
} Roles;

static const char HEXDIGITS[] = "0123456789abcdef";

static uint64_t be_unsigned(const unsigned char *p, Py_ssize_t n) {
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* The record's fields as `"name":value,...` into b; their roles into r. 0: not covered. */
static int put_fields(Buf *b, const unsigned char *rec, const Field *fields, Py_ssize_t nf,
                      Roles *r) {
    char tmp[64];
    for (Py_ssize_t i = 0; i < nf; i++) {
        const Field *f = &fields[i];
        const unsigned char *p = rec + f->offset;
        if (i) put(b, ",", 1);
        put(b, f->key, (size_t)f->key_len);
        uint64_t v;
        switch (f->type) {
        case T_UNSIGNED:
            v = be_unsigned(p, f->length);
            put_u64(b, v);
            r->num[f->role] = v;
            break;
        case T_SIGNED: {
            v = be_unsigned(p, f->length);
            if (f->length < 8 && (v >> (8 * f->length - 1)) & 1) v |= ~(uint64_t)0 << (8 * f->length);
            put_i64(b, (int64_t)v);
            break;
        }
        case T_BOOL:
            puts_(b, be_unsigned(p, f->length) == 1 ? "true" : "false");
            break;
        case T_IPV4: {
            int n = 0;
            for (int j = 0; j < 4; j++) {
                unsigned o = p[j];
                if (o >= 100) tmp[n++] = (char)('0' + o / 100);
                if (o >= 10) tmp[n++] = (char)('0' + o / 10 % 10);
                tmp[n++] = (char)('0' + o % 10);
                tmp[n++] = '.';
            }
            tmp[--n] = 0;
            put(b, "\"", 1); put(b, tmp, (size_t)n); put(b, "\"", 1);
            memcpy(r->text[f->role], tmp, (size_t)n + 1);
            break;
        }
        case T_IPV6: {
            if (inet_ntop(AF_INET6, p, tmp, sizeof tmp) == NULL) return 0;
            put(b, "\"", 1); puts_(b, tmp); put(b, "\"", 1);
            memcpy(r->text[f->role], tmp, strlen(tmp) + 1);
            break;
        }
        case T_MAC:
            put(b, "\"", 1);
            for (int j = 0; j < 6; j++) {
                char h[3] = {HEXDIGITS[p[j] >> 4], HEXDIGITS[p[j] & 15], ':'};
                put(b, h, j < 5 ? 3 : 2);
            }
            put(b, "\"", 1);
            break;
        case T_HEX:
            put(b, "\"", 1);
            for (Py_ssize_t j = 0; j < f->length; j++) {
                char h[2] = {HEXDIGITS[p[j] >> 4], HEXDIGITS[p[j] & 15]};
                put(b, h, 2);
            }
            put(b, "\"", 1);
            break;
        case T_DATE_S: case T_DATE_MS: {
            char iso[28];
            double parsed;
            v = be_unsigned(p, f->length);
            if (f->type == T_DATE_S) {
                if (v > (uint64_t)MAX_SECONDS || !iso_parts((int64_t)v, 0, iso)) return 0;
                parsed = (double)v;
            } else {
                if (v > (uint64_t)MAX_SECONDS * 1000 || !iso_double((double)v / 1000.0, iso, &parsed))
                    return 0;
            }
            put(b, "\"", 1); put(b, iso, 27); put(b, "\"", 1);
            memcpy(r->text[f->role], iso, 28);
            r->when[f->role] = parsed;
            break;
        }
        }
        r->has[f->role] = 1;
    }
    return 1;
}

typedef struct {
    double export_ts;
    long long uptime;               /* -1: none (IPFIX) */
    unsigned long long sampling;    /* 0: none */
    const char *pre, *mid, *post, *key_head, *key_tail, *exporter_ip;
    Py_ssize_t pre_n, mid_n, post_n, key_head_n, key_tail_n;
    PyObject *transports;           /* 256 transport names (bytes) by protocol number */
} Consts;

/* One record's whole document into doc and its _id key into key. 0: not covered,
   -1: a Python error. */
static int one_record(const unsigned char *rec, const Field *fields, Py_ssize_t nf,
                      const Consts *c, Py_ssize_t index, Buf *doc, Buf *key, Buf *fieldbuf) {
    Roles r;
    memset(r.has, 0, sizeof r.has);
    fieldbuf->n = 0;
    if (!put_fields(fieldbuf, rec, fields, nf, &r) || fieldbuf->failed) return fieldbuf->failed ? -1 : 0;
    if (c->sampling) {
        if (nf) put(fieldbuf, ",", 1);
        puts_(fieldbuf, "\"sampling_interval\":");
        put_u64(fieldbuf, c->sampling);
    }
    /* _flow_times */
    int has_start = 0, has_end = 0;
    double start = 0, end = 0;
    const char *start_text = NULL, *end_text = NULL;
    int done = 0;
    if (r.has[R_FIRST_UP] && r.has[R_LAST_UP] && c->uptime >= 0) {
        uint64_t up = (uint64_t)c->uptime;
        start = c->export_ts - (double)((up - r.num[R_FIRST_UP]) & 0xFFFFFFFFULL) / 1000.0;
        end = c->export_ts - (double)((up - r.num[R_LAST_UP]) & 0xFFFFFFFFULL) / 1000.0;
        has_start = has_end = done = 1;
    }
    if (!done) {
        if (r.has[R_START_MS]) { start = r.when[R_START_MS]; start_text = r.text[R_START_MS]; has_start = 1; }
        else if (r.has[R_START_S]) { start = r.when[R_START_S]; start_text = r.text[R_START_S]; has_start = 1; }
        if (r.has[R_END_MS]) { end = r.when[R_END_MS]; end_text = r.text[R_END_MS]; has_end = 1; }
        else if (r.has[R_END_S]) { end = r.when[R_END_S]; end_text = r.text[R_END_S]; has_end = 1; }
        if (start_text && !(start >= 0 && start < 2147483648.0)) start_text = NULL;
        if (end_text && !(end >= 0 && end < 2147483648.0)) end_text = NULL;
    }
    char start_iso[28], end_iso[28];
    if (has_start && !start_text) {
        if (!iso_double(start, start_iso, NULL)) return 0;
        start_text = start_iso;
    }
    if (has_end && !end_text) {
        if (!iso_double(end, end_iso, NULL)) return 0;
        end_text = end_iso;
    }
    /* _transaction: the flow */
    const char *src = r.has[R_SRC4] ? r.text[R_SRC4] : r.has[R_SRC6] ? r.text[R_SRC6] : NULL;
    const char *dst = r.has[R_DST4] ? r.text[R_DST4] : r.has[R_DST6] ? r.text[R_DST6] : NULL;
    int src_v6 = !r.has[R_SRC4] && r.has[R_SRC6], dst_v6 = !r.has[R_DST4] && r.has[R_DST6];
    const char *transport = "";
    Py_ssize_t transport_n = 0;
    uint64_t sport = 0, dport = 0;
    int proto_known = r.has[R_PROTO];
    uint64_t proto = r.num[R_PROTO];
    if (src && dst) {
        if (src_v6 != dst_v6) return 0;
        if (proto_known) {
            if (proto > 255 || proto == 1 || proto == 58) return 0;
            PyObject *t = PyTuple_GET_ITEM(c->transports, (Py_ssize_t)proto);
            transport = PyBytes_AS_STRING(t);
            transport_n = PyBytes_GET_SIZE(t);
        } else {
            transport = "unknown";
            transport_n = 7;
        }
        sport = r.has[R_SPORT] && r.num[R_SPORT] <= 0xFFFF ? r.num[R_SPORT] : 0;
        dport = r.has[R_DPORT] && r.num[R_DPORT] <= 0xFFFF ? r.num[R_DPORT] : 0;
    }
    int ports = proto_known && (proto == 6 || proto == 17) && src && dst;
    /* whole_text: event */
    doc->n = 0;
    put(doc, c->pre, (size_t)c->pre_n);
    if (has_start && has_end && end >= start) {
        double us = nearbyint((end - start) * 1e6);
        if (us > 9e15) return 0;
        puts_(doc, ",\"start\":\""); puts_(doc, start_text);
        puts_(doc, "\",\"end\":\""); puts_(doc, end_text);
        if (end >= c->export_ts) {
            puts_(doc, "\",\"duration\":"); put_i64(doc, (int64_t)us * 1000);
            puts_(doc, ",\"action\":\"netflow_flow\"}");
        } else {
            puts_(doc, "\",\"action\":\"netflow_flow\",\"duration\":"); put_i64(doc, (int64_t)us * 1000);
            puts_(doc, "}");
        }
    } else {
        if (has_start) { puts_(doc, ",\"start\":\""); puts_(doc, start_text); puts_(doc, "\""); }
        if (has_end) { puts_(doc, ",\"end\":\""); puts_(doc, end_text); puts_(doc, "\""); }
        puts_(doc, ",\"action\":\"netflow_flow\"}");
    }
    /* network (_flow_text and whole_text's counts) */
    int v6 = src && dst ? src_v6 : (strchr(c->exporter_ip, ':') != NULL);
    puts_(doc, ",\"network\":{");
    if (src && dst) {
        puts_(doc, "\"transport\":\""); put(doc, transport, (size_t)transport_n); puts_(doc, "\",");
    }
    puts_(doc, v6 ? "\"type\":\"ipv6\"" : "\"type\":\"ipv4\"");
    if (ports) {
        unsigned char sa[16], da[16];
        int fam = v6 ? AF_INET6 : AF_INET;
        if (inet_pton(fam, src, sa) != 1 || inet_pton(fam, dst, da) != 1) return 0;
        char cid[30];
        community_id((unsigned)proto, sa, (unsigned)sport, da, (unsigned)dport, v6 ? 16 : 4, cid);
        puts_(doc, ",\"community_id\":\""); put(doc, cid, 30); puts_(doc, "\"");
    }
    int oct = r.has[R_OCT_DELTA] ? R_OCT_DELTA : r.has[R_OCT_TOTAL] ? R_OCT_TOTAL : 0;
    int pkt = r.has[R_PKT_DELTA] ? R_PKT_DELTA : r.has[R_PKT_TOTAL] ? R_PKT_TOTAL : 0;
    if (oct) { puts_(doc, ",\"bytes\":"); put_u64(doc, r.num[oct]); }
    if (pkt) { puts_(doc, ",\"packets\":"); put_u64(doc, r.num[pkt]); }
    if (proto_known) { puts_(doc, ",\"iana_number\":\""); put_u64(doc, proto); puts_(doc, "\""); }
    puts_(doc, "}");
    if (src && dst) {
        puts_(doc, ",\"source\":{\"ip\":\""); puts_(doc, src);
        if (ports) { puts_(doc, "\",\"port\":"); put_u64(doc, sport); puts_(doc, "}"); }
        else puts_(doc, "\"}");
        puts_(doc, ",\"destination\":{\"ip\":\""); puts_(doc, dst);
        if (ports) { puts_(doc, "\",\"port\":"); put_u64(doc, dport); puts_(doc, "}"); }
        else puts_(doc, "\"}");
        puts_(doc, ",\"related\":{\"ip\":[\""); puts_(doc, src);
        if (strcmp(src, dst) != 0) { puts_(doc, "\",\""); puts_(doc, dst); }
        puts_(doc, "\"]}");
    }
    put(doc, c->mid, (size_t)c->mid_n);
    put(doc, fieldbuf->p, fieldbuf->n);
    if (fieldbuf->n) put(doc, ",", 1);
    put(doc, c->post, (size_t)c->post_n);
    /* the _id key: _id_prefix + round(ts * 1e6) + identity */
    key->n = 0;
    put(key, c->key_head, (size_t)c->key_head_n);
    if (src && dst) {
        put(key, transport, (size_t)transport_n); put(key, "|", 1);
        puts_(key, src); put(key, "|", 1); put_u64(key, sport); put(key, "|", 1);
        puts_(key, dst); put(key, "|", 1); put_u64(key, dport);
    } else {
        put(key, "|", 1); puts_(key, c->exporter_ip); put(key, "|0|", 3);
        puts_(key, c->exporter_ip); put(key, "|0", 2);
    }
    put(key, c->key_tail, (size_t)c->key_tail_n);
    put_u64(key, (uint64_t)index);
    return (doc->failed || key->failed) ? -1 : 1;
}

static PyObject *records(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t start, count, size;
    PyObject *plan, *consts;
    Field fields[MAX_FIELDS];
    Py_ssize_t nf;
    Consts c;
    PyObject *pre, *mid, *post, *key_head, *key_tail, *exporter_ip;
    if (!PyArg_ParseTuple(args, "y*nnnO!O!", &data, &start, &count, &size, &PyTuple_Type, &plan,
                          &PyTuple_Type, &consts))
        return NULL;
    PyObject *out = NULL;
    Buf doc = {0}, key = {0}, fieldbuf = {0};
    if (!PyArg_ParseTuple(consts, "dLKSSSSSSO!", &c.export_ts, &c.uptime, &c.sampling, &pre, &mid,
                          &post, &key_head, &key_tail, &exporter_ip, &PyTuple_Type, &c.transports))
        goto done;
    if (PyTuple_GET_SIZE(c.transports) != 256) {
        PyErr_SetString(PyExc_ValueError, "transports: 256 names");
        goto done;
    }
    for (Py_ssize_t i = 0; i < 256; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(c.transports, i))) {
            PyErr_SetString(PyExc_TypeError, "transports: bytes");
            goto done;
        }
    }
    if (size < 1 || start < 0 || count < 0 || (count && (start > data.len || (data.len - start) / size < count))) {
        PyErr_SetString(PyExc_ValueError, "records past the data");
        goto done;
    }
    if (!read_plan(plan, fields, &nf, size)) goto done;
    c.pre = PyBytes_AS_STRING(pre); c.pre_n = PyBytes_GET_SIZE(pre);
    c.mid = PyBytes_AS_STRING(mid); c.mid_n = PyBytes_GET_SIZE(mid);
    c.post = PyBytes_AS_STRING(post); c.post_n = PyBytes_GET_SIZE(post);
    c.key_head = PyBytes_AS_STRING(key_head); c.key_head_n = PyBytes_GET_SIZE(key_head);
    c.key_tail = PyBytes_AS_STRING(key_tail); c.key_tail_n = PyBytes_GET_SIZE(key_tail);
    c.exporter_ip = PyBytes_AS_STRING(exporter_ip);
    if ((Py_ssize_t)strlen(c.exporter_ip) != PyBytes_GET_SIZE(exporter_ip)) {
        PyErr_SetString(PyExc_ValueError, "exporter_ip: no NUL");
        goto done;
    }
    out = PyList_New(count);
    if (out == NULL) goto done;
    const unsigned char *base = (const unsigned char *)data.buf + start;
    for (Py_ssize_t i = 0; i < count; i++) {
        int ok = one_record(base + i * size, fields, nf, &c, i, &doc, &key, &fieldbuf);
        PyObject *item;
        if (ok < 0) {
            if (!PyErr_Occurred()) PyErr_NoMemory();
            Py_CLEAR(out);
            goto done;
        }
        if (ok == 0) {
            item = PyLong_FromSsize_t(i);
        } else {
            uint8_t digest[15];
            char idt[20];
            blake2b((const uint8_t *)key.p, key.n, digest, 15);
            id_text(digest, idt);
            PyObject *id = PyUnicode_FromStringAndSize(idt, 20);
            PyObject *text = PyBytes_FromStringAndSize(doc.p, (Py_ssize_t)doc.n);
            item = (id && text) ? PyTuple_Pack(2, id, text) : NULL;
            Py_XDECREF(id);
            Py_XDECREF(text);
        }
        if (item == NULL) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, i, item);
    }
done:
    PyMem_Free(doc.p);
    PyMem_Free(key.p);
    PyMem_Free(fieldbuf.p);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *py_blake2b_id(PyObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    uint8_t digest[15];
    char idt[20];
    blake2b((const uint8_t *)in.buf, (size_t)in.len, digest, 15);
    PyBuffer_Release(&in);
    id_text(digest, idt);
    return PyUnicode_FromStringAndSize(idt, 20);
}

static PyObject *py_iso_time(PyObject *self, PyObject *arg) {
    double ts = PyFloat_AsDouble(arg);
    if (ts == -1.0 && PyErr_Occurred()) return NULL;
    char out[28];
    if (!iso_double(ts, out, NULL)) Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize(out, 27);
}

static PyMethodDef methods[] = {
    {"records", records, METH_VARARGS,
     "records(data, start, count, size, plan, consts) -> [(doc_id, json_bytes) or index]"},
    {"blake2b_id", py_blake2b_id, METH_O,
     "document_id_from's _id of an already joined key (bytes): for the differential test"},
    {"iso_time", py_iso_time, METH_O, "iso_time(ts) as this module writes it, None outside 1970..9999"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wirebeat._nfcore",
                                    "NetFlow/IPFIX data sets to documents in C (see beat/_nfcore.c)",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__nfcore(void) { return PyModule_Create(&module); }
