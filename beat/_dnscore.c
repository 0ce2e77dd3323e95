/* wirebeat._dnscore: the common DNS message in C, for decoders/dns.py decode_message.

   `decode(data)` reads what most DNS traffic is: a header, its questions, records of
   type A, AAAA, CNAME, NS, PTR and DNAME in the answer, authority and additional
   sections, and an EDNS OPT record without options, with every name read as
   decoders/dns.py read_name reads it (compression, the same limits, the same escapes). It returns the same DNSMessage decode_message returns, made of the same
   classes (given once by `configure`), or None for anything else: another record type
   (MX, TXT, SOA...), EDNS options, a second OPT, a name or record that does not read
   or does not fill its record, a question or record past the end. decode_message then reads the message in Python, which is the reference
   (it raises, or notes what was wrong); tests/beat/test_dnscore.py runs both on the same
   messages, hostile ones included.

   `document_text` writes decoders/dns.py document() of a transaction of such records
   (whichever reading made them) as JSON text, with the question's domain parts from the
   Public Suffix List (`configure_suffixes`); see its section below. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "_jsontext.h"    /* Buf, put(), put_json() ... */

static PyObject *Question, *ResourceRecord, *EDNS, *DNSMessage;
static long max_hops = -1, max_octets, max_labels;

/* The records are made without their Python __init__ (a call of the class cost ~3,000
   instructions, 2.5 a message): allocated as object.__new__ allocates them, then each
   field's slot set, in the order of the class's __match_args__ (its __init__'s). Only for
   a class of that plain shape (object's __new__, slot members for every field, no
   __post_init__, the expected number of fields); any other class is called. */
#define MAX_FIELDS 20
typedef struct { PyTypeObject *type; Py_ssize_t n, offsets[MAX_FIELDS]; } recipe_t;
static recipe_t r_question, r_record, r_edns, r_message;

static int recipe_of(PyObject *cls, Py_ssize_t fields, recipe_t *r) {
    r->type = NULL;
    if (!PyType_Check(cls) || ((PyTypeObject *)cls)->tp_new != PyBaseObject_Type.tp_new) return 0;
    PyObject *post = PyObject_GetAttrString(cls, "__post_init__");
    if (post != NULL) { Py_DECREF(post); return 0; }
    PyErr_Clear();
    PyObject *names = PyObject_GetAttrString(cls, "__match_args__");
    if (names == NULL) { PyErr_Clear(); return 0; }
    int ok = PyTuple_Check(names) && PyTuple_GET_SIZE(names) == fields && fields <= MAX_FIELDS;
    for (Py_ssize_t i = 0; ok && i < fields; i++) {
        PyObject *d = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (d == NULL) { PyErr_Clear(); ok = 0; break; }
        if (Py_TYPE(d) == &PyMemberDescr_Type && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX
                && !(((PyMemberDescrObject *)d)->d_member->flags & READONLY))
            r->offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        else
            ok = 0;
        Py_DECREF(d);
    }
    Py_DECREF(names);
    if (ok) { r->type = (PyTypeObject *)cls; r->n = fields; }
    return 0;
}

/* A record of `cls` from n new references (taken, also on failure; NULL if one is NULL). */
static PyObject *make(const recipe_t *r, PyObject *cls, PyObject **values, Py_ssize_t n) {
    PyObject *o = NULL;
    Py_ssize_t i;
    for (i = 0; i < n; i++) if (values[i] == NULL) goto drop;
    if (r->type == NULL || r->n != n) {
        o = PyObject_Vectorcall(cls, values, n, NULL);
        goto drop;
    }
    o = r->type->tp_alloc(r->type, 0);
    if (o == NULL) goto drop;
    for (i = 0; i < n; i++) *(PyObject **)((char *)o + r->offsets[i]) = values[i];
    return o;
drop:
    for (i = 0; i < n; i++) Py_XDECREF(values[i]);
    return o;
}

static PyObject *flag(unsigned on) { return Py_NewRef(on ? Py_True : Py_False); }

#define DECLINE (-2)
#define TYPE_A 1
#define TYPE_NS 2
#define TYPE_CNAME 5
#define TYPE_PTR 12
#define TYPE_AAAA 28
#define TYPE_DNAME 39
#define TYPE_OPT 41

/* read_name: the name's text into `out` (at most 4 * 255 characters), the offset after
   the name's own bytes into *after; 0, or DECLINE where read_name raises. */
static int read_name(const unsigned char *data, Py_ssize_t size, Py_ssize_t offset, Py_ssize_t end,
                     char *out, Py_ssize_t *out_len, Py_ssize_t *after) {
    Py_ssize_t limit = end, run_start = offset, pos = offset, first_after = -1, n = 0;
    long octets = 1, labels = 0, hops = 0;
    for (;;) {
        if (pos >= limit) return DECLINE;
        unsigned int length = data[pos], kind = length & 0xC0;
        if (kind == 0xC0) {
            if (pos + 1 >= limit) return DECLINE;
            Py_ssize_t target = ((Py_ssize_t)(length & 0x3F) << 8) | data[pos + 1];
            if (target >= pos || target >= run_start) return DECLINE;
            if (++hops > max_hops) return DECLINE;
            if (first_after < 0) first_after = pos + 2;
            limit = size;
            run_start = pos = target;
            continue;
        }
        if (kind) return DECLINE;
        if (length == 0) { pos += 1; break; }
        if (pos + 1 + (Py_ssize_t)length > limit) return DECLINE;
        octets += 1 + length;
        if (octets > max_octets || labels >= max_labels) return DECLINE;
        if (labels++) out[n++] = '.';
        for (unsigned int i = 1; i <= length; i++) {      /* dns.py's _LABEL_ESCAPES */
            unsigned char c = data[pos + i];
            if (c == 0x2E || c == 0x5C) { out[n++] = '\\'; out[n++] = (char)c; }
            else if (c >= 0x21 && c <= 0x7E) out[n++] = (char)c;
            else {
                out[n++] = '\\';
                out[n++] = (char)('0' + c / 100); out[n++] = (char)('0' + c / 10 % 10); out[n++] = (char)('0' + c % 10);
            }
        }
        pos += 1 + length;
    }
    if (labels == 0) out[n++] = '.';
    *out_len = n;
    *after = first_after >= 0 ? first_after : pos;
    return 0;
}

/* The name at *offset read up to `end` (moving *offset past it), Py_None to decline. */
static PyObject *name_at(const unsigned char *data, Py_ssize_t size, Py_ssize_t *offset, Py_ssize_t end) {
    char text[4 * 255 + 8];
    Py_ssize_t len, after;
    if (read_name(data, size, *offset, end, text, &len, &after) < 0) return Py_NewRef(Py_None);
    *offset = after;
    return PyUnicode_DecodeASCII(text, len, NULL);
}

static uint16_t u16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* The records of one section into a new tuple; Py_None to decline, NULL on error. In the
   additional section (edns != NULL) a first OPT without options becomes *edns (an EDNS). */
static PyObject *records(const unsigned char *data, Py_ssize_t size, Py_ssize_t *offset, unsigned count,
                         PyObject **edns, unsigned *ext_rcode) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (unsigned i = 0; i < count; i++) {
        PyObject *owner = name_at(data, size, offset, size), *value = NULL;
        if (owner == NULL || owner == Py_None) { Py_DECREF(out); return owner; }
        Py_ssize_t at = *offset;
        if (at + 10 > size) goto decline;
        unsigned type = u16(data + at), class_ = u16(data + at + 2), rdlength = u16(data + at + 8);
        unsigned long ttl = ((unsigned long)data[at + 4] << 24) | ((unsigned long)data[at + 5] << 16)
                            | ((unsigned long)data[at + 6] << 8) | data[at + 7];
        at += 10;
        if (at + rdlength > size) goto decline;
        *offset = at + rdlength;
        if (type == TYPE_OPT && edns != NULL) {     /* dns.py _decode_opt, no options */
            if (*edns != NULL || rdlength != 0) goto decline;
            Py_DECREF(owner);
            *ext_rcode = (unsigned)(ttl >> 24);
            PyObject *v[5] = {PyLong_FromUnsignedLong(class_), PyLong_FromUnsignedLong(ttl >> 24),
                              PyLong_FromUnsignedLong((ttl >> 16) & 0xFF), flag(ttl & 0x8000), PyDict_New()};
            *edns = make(&r_edns, EDNS, v, 5);
            if (*edns == NULL) { Py_DECREF(out); return NULL; }
            continue;
        }
        if ((type == TYPE_A && rdlength == 4) || (type == TYPE_AAAA && rdlength == 16)) {
            char text[INET6_ADDRSTRLEN];
            if (inet_ntop(type == TYPE_A ? AF_INET : AF_INET6, data + at, text, sizeof text) == NULL) goto decline;
            value = PyUnicode_DecodeASCII(text, (Py_ssize_t)strlen(text), NULL);
        } else if (type == TYPE_CNAME || type == TYPE_NS || type == TYPE_PTR || type == TYPE_DNAME) {
            Py_ssize_t name_end = at;       /* the name must fill the record's data exactly */
            value = name_at(data, size, &name_end, at + rdlength);
            if (value == Py_None || (value != NULL && name_end != at + rdlength)) { Py_DECREF(value); goto decline; }
        } else {
            goto decline;
        }
        PyObject *rr = NULL;
        if (value != NULL) {
            PyObject *v[6] = {owner, PyLong_FromUnsignedLong(type), PyLong_FromUnsignedLong(class_),
                              PyLong_FromUnsignedLong(ttl), value, PyDict_New()};
            rr = make(&r_record, ResourceRecord, v, 6);
        } else
            Py_DECREF(owner);
        if (rr == NULL || PyList_Append(out, rr) < 0) { Py_XDECREF(rr); Py_DECREF(out); return NULL; }
        Py_DECREF(rr);
        continue;
    decline:
        Py_DECREF(owner);
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    Py_SETREF(out, PyList_AsTuple(out));
    return out;
}

PyDoc_STRVAR(decode_doc,
"decode(data) -> DNSMessage | None\n\n"
"decoders/dns.py decode_message for messages of questions, A/AAAA/CNAME/NS/PTR/DNAME records\n"
"and an OPT without options; None:\n"
"let decode_message read it.");

static PyObject *decode(PyObject *self, PyObject *arg) {
    if (max_hops < 0) { PyErr_SetString(PyExc_RuntimeError, "decode: configure() first"); return NULL; }
    if (!PyBytes_CheckExact(arg)) Py_RETURN_NONE;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg), offset = 12;
    if (size < 12) Py_RETURN_NONE;
    unsigned ident = u16(data), flags = u16(data + 2), qdcount = u16(data + 4);
    unsigned counts[3] = {u16(data + 6), u16(data + 8), u16(data + 10)};
    PyObject *questions = PyTuple_New(qdcount), *sections[3] = {NULL, NULL, NULL}, *edns = NULL, *result = NULL;
    unsigned ext_rcode = 0;
    if (questions == NULL) return NULL;
    for (unsigned i = 0; i < qdcount; i++) {
        PyObject *name = name_at(data, size, &offset, size);
        if (name == NULL || name == Py_None) { result = name; goto done; }
        if (offset + 4 > size) { Py_DECREF(name); result = Py_NewRef(Py_None); goto done; }
        PyObject *v[3] = {name, PyLong_FromLong(u16(data + offset)), PyLong_FromLong(u16(data + offset + 2))};
        PyObject *q = make(&r_question, Question, v, 3);
        if (q == NULL) goto done;
        PyTuple_SET_ITEM(questions, i, q);
        offset += 4;
    }
    for (int s = 0; s < 3; s++) {
        sections[s] = records(data, size, &offset, counts[s], s == 2 ? &edns : NULL, &ext_rcode);
        if (sections[s] == NULL || sections[s] == Py_None) { result = Py_XNewRef(sections[s]); goto done; }
    }
    unsigned rcode = (flags & 0xF) | ext_rcode << 4;
    {
        PyObject *v[17] = {
            PyLong_FromUnsignedLong(ident), flag(flags & 0x8000), PyLong_FromUnsignedLong((flags >> 11) & 0xF),
            flag(flags & 0x0400), flag(flags & 0x0200), flag(flags & 0x0100), flag(flags & 0x0080),
            flag(flags & 0x0020), flag(flags & 0x0010), PyLong_FromUnsignedLong(rcode),
            Py_NewRef(questions), Py_NewRef(sections[0]), Py_NewRef(sections[1]), Py_NewRef(sections[2]),
            Py_NewRef(edns ? edns : Py_None), PyLong_FromSsize_t(size), PyTuple_New(0)};
        result = make(&r_message, DNSMessage, v, 17);
    }
done:
    Py_DECREF(questions);
    Py_XDECREF(edns);
    for (int s = 0; s < 3; s++) Py_XDECREF(sections[s]);
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(Question, ResourceRecord, EDNS, DNSMessage, max_pointer_hops, max_name_octets, max_labels)\n\n"
"The classes decode() makes and read_name's limits (decoders/dns.py), given once.");

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *q, *rr, *edns, *msg;
    long hops, octets, labels;
    if (!PyArg_ParseTuple(args, "OOOOlll:configure", &q, &rr, &edns, &msg, &hops, &octets, &labels)) return NULL;
    if (hops < 0 || octets < 1 || octets > 255 || labels < 0) {
        PyErr_SetString(PyExc_ValueError, "configure: limits out of range (names of at most 255 octets)");
        return NULL;
    }
    Py_XSETREF(Question, Py_NewRef(q));
    Py_XSETREF(ResourceRecord, Py_NewRef(rr));
    Py_XSETREF(EDNS, Py_NewRef(edns));
    Py_XSETREF(DNSMessage, Py_NewRef(msg));
    recipe_of(q, 3, &r_question);
    recipe_of(rr, 6, &r_record);
    recipe_of(edns, 5, &r_edns);
    recipe_of(msg, 17, &r_message);
    max_hops = hops; max_octets = octets; max_labels = labels;
    Py_RETURN_NONE;
}

/* ---- document_text: decoders/dns.py document() as JSON text ----------------------------

   The bytes orjson.dumps makes of document(txn) (without "related"), and related's text,
   for the messages decode() makes and those decode_message_python makes of the same
   classes. decoders/dns.py keeps document() as the reference (and calls it for what
   this declines: send_request/send_response, a value of an unexpected type, many
   resolved addresses); tests/beat/test_dnscore.py compares the two. */

static PyObject *TypeNames, *ClassNames, *OpcodeNames, *RcodeNames, *PartsText;

#define MAX_RESOLVED 32     /* resolved addresses kept for related.ip; past that: decline */

/* The slots of a record of the recipe's class (its fields in __match_args__ order). */
#define SLOT(r, o, i) (*(PyObject **)((char *)(o) + (r).offsets[i]))
#define IS_A(r, o) ((r).type != NULL && Py_TYPE(o) == (r).type)

typedef struct { const char *text; Py_ssize_t len; } span_t;

static int put_bool(Buf *b, PyObject *o) {
    if (o == Py_True) return PUTS(b, "true");
    if (o == Py_False) return PUTS(b, "false");
    return JSON_FALLBACK;
}

/* `names.get(number) or str(number)` written raw (unquoted): the dict's name, else the
   number's decimal. rcode_name's "Unknown N" with `unknown`. */
static int put_name_raw(Buf *b, PyObject *names, PyObject *number, int unknown) {
    long long v;
    int rc = as_ll(number, &v);
    if (rc) return rc;
    PyObject *name = PyDict_GetItemWithError(names, number);     /* borrowed */
    if (name == NULL && PyErr_Occurred()) return -1;
    if (name != NULL) {
        if (!PyUnicode_CheckExact(name)) return JSON_FALLBACK;
        if (PyUnicode_GET_LENGTH(name)) return put_raw(b, name);
    }
    if (unknown && (rc = PUTS(b, "Unknown ")) != 0) return rc;
    return put_ll(b, v);
}

/* The same as a JSON string (the dicts' names need no escapes; checked all the same). */
static int put_name(Buf *b, PyObject *names, PyObject *number, int unknown) {
    Py_ssize_t at = b->len + 1;
    int rc = PUTS(b, "\"");
    if (rc || (rc = put_name_raw(b, names, number, unknown))) return rc;
    for (Py_ssize_t i = at; i < b->len; i++)
        if ((unsigned char)b->data[i] < 0x20 || b->data[i] == '"' || b->data[i] == '\\') return JSON_FALLBACK;
    return PUTS(b, "\"");
}

static int put_int(Buf *b, PyObject *o) {
    long long v;
    int rc = as_ll(o, &v);
    return rc ? rc : put_ll(b, v);
}

/* A key that _records' entry sets itself (rr.extra's own would be overwritten in place). */
static int record_key(PyObject *key) {
    static const char *own[] = {"name", "type", "class", "ttl", "data"};
    for (int i = 0; i < 5; i++)
        if (PyUnicode_CompareWithASCIIString(key, own[i]) == 0) return 1;
    return 0;
}

/* ---- domain_parts (decoders/dns.py) as text, for dns.question -----------------------

   The Public Suffix List walk of decoders/dns_suffixes.py Suffixes.privatesuffix on
   its `tails` (given by configure_suffixes when dns.py loads the list), and
   domain_parts's keys from its answer, for ASCII names without an "xn--" label (the
   other list); anything else, or before the list is loaded, is DECLINE: the caller asks
   decoders/dns.py _domain_parts_text. tests/beat/test_dnstext.py compares the two on
   every rule of the list. */

static PyObject *Tails;                 /* Suffixes.tails: tail text -> what holds there */
static long kind_exact, kind_wildcard, kind_exception;

#define MAX_NAME_TEXT (4 * 255 + 8)     /* read_name's longest text */

/* privatesuffix(lowered[0:n]): the registered domain's length (a tail of the name), 0
   for none; -1 error, DECLINE. */
static Py_ssize_t private_suffix(const char *lowered, Py_ssize_t n) {
    if (n && lowered[n - 1] == '.') n--;        /* one trailing dot is ignored */
    Py_ssize_t starts[MAX_NAME_TEXT / 2 + 2];   /* where each label starts */
    Py_ssize_t count = 0;
    starts[count++] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lowered[i] != '.') continue;
        if (i + 1 == n || lowered[i + 1] == '.' || i == 0) return 0;     /* an empty label */
        starts[count++] = i + 1;
    }
    if (count == 1 || n == 0) return 0;
    Py_ssize_t public = 1;      /* trailing labels that are public: 1 unless a rule says otherwise */
    for (Py_ssize_t size = 1; size <= count; size++) {
        /* the tail of `size` labels is the text from its first label's start */
        PyObject *tail = PyUnicode_DecodeASCII(lowered + starts[count - size], n - starts[count - size], NULL);
        if (tail == NULL) return -1;
        PyObject *kind = PyDict_GetItemWithError(Tails, tail);      /* borrowed */
        Py_DECREF(tail);
        if (kind == NULL) {
            if (PyErr_Occurred()) return -1;
            break;
        }
        long k = PyLong_AsLong(kind);
        if (k == -1 && PyErr_Occurred()) return -1;
        if (k == kind_exact) public = size;
        else if (k == kind_exception) public = size - 1;
        else if (k == kind_wildcard) public = size + (size < count);  /* the label under it too */
        else if (k != 0) return DECLINE;
    }
    if (count <= public) return 0;
    return n - starts[count - public - 1];
}

/* domain_parts(name)'s keys as JSON text (',"etld_plus_one":...'); 0, -1 or DECLINE. */
static int put_domain_parts(Buf *b, const char *name, Py_ssize_t n) {
    int rc;
    if (n == 0 || name[0] == '.' || memchr(name, '\\', n)) return 0;
    for (Py_ssize_t i = 0; i + 1 < n; i++)
        if (name[i] == '.' && name[i + 1] == '.') return 0;
    if (Tails == NULL || n > MAX_NAME_TEXT) return DECLINE;
    char lowered[MAX_NAME_TEXT];
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x80) return DECLINE;          /* str.lower() of non-ASCII: Python's */
        lowered[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    for (Py_ssize_t i = 0; i + 4 <= n; i++)
        if (memcmp(lowered + i, "xn--", 4) == 0) return DECLINE;     /* the list with ACE rules */
    Py_ssize_t registered = private_suffix(lowered, n);
    if (registered < 0) return (int)registered;
    if (registered) {
        /* the name's own case: its last `registered` characters */
        const char *reg = name + n - registered, *dot = memchr(reg, '.', registered);
        Py_ssize_t sub = n - registered;
        while (sub && name[sub - 1] == '.') sub--;
        if ((rc = PUTS(b, ",\"etld_plus_one\":")) || (rc = put_json_text(b, reg, registered))
            || (rc = PUTS(b, ",\"registered_domain\":")) || (rc = put_json_text(b, reg, registered)))
            return rc;
        if (dot && ((rc = PUTS(b, ",\"top_level_domain\":"))
                    || (rc = put_json_text(b, dot + 1, registered - (dot + 1 - reg)))))
            return rc;
        if (sub && ((rc = PUTS(b, ",\"subdomain\":")) || (rc = put_json_text(b, name, sub)))) return rc;
        return 0;
    }
    const char *dot = memchr(name, '.', n);
    if (dot == NULL || memchr(dot + 1, '.', n - (dot + 1 - name))) return 0;    /* not one dot */
    if (dot + 1 < name + n
        && ((rc = PUTS(b, ",\"top_level_domain\":")) || (rc = put_json_text(b, dot + 1, n - (dot + 1 - name)))))
        return rc;
    if ((rc = PUTS(b, ",\"registered_domain\":")) || (rc = put_json_text(b, name, n))) return rc;
    return 0;
}

PyDoc_STRVAR(domain_parts_text_doc,
"domain_parts_text(name) -> str | None\n\n"
"decoders/dns.py domain_parts(name) as the JSON text document_text writes after a question's\n"
"class; None where it leaves the name to decoders/dns.py _domain_parts_text.");

static PyObject *domain_parts_text(PyObject *self, PyObject *name) {
    const char *s;
    Py_ssize_t n;
    if (utf8(name, &s, &n)) Py_RETURN_NONE;
    Buf b;
    buf_init(&b);
    int rc = put_domain_parts(&b, s, n);
    PyObject *result = rc == 0 ? PyUnicode_DecodeUTF8(b.data, b.len, NULL) : rc == DECLINE ? Py_NewRef(Py_None) : NULL;
    buf_free(&b);
    return result;
}

PyDoc_STRVAR(configure_suffixes_doc,
"configure_suffixes(tails, exact, wildcard, exception)\n\n"
"decoders/dns_suffixes.py SUFFIXES.tails and its kinds, once the list is loaded.");

static PyObject *configure_suffixes(PyObject *self, PyObject *args) {
    PyObject *tails;
    long exact, wildcard, exception;
    if (!PyArg_ParseTuple(args, "O!lll:configure_suffixes", &PyDict_Type, &tails, &exact, &wildcard, &exception))
        return NULL;
    if (exact == 0 || wildcard == 0 || exception == 0) {
        PyErr_SetString(PyExc_ValueError, "configure_suffixes: 0 is the kind of a tail without a rule");
        return NULL;
    }
    Py_XSETREF(Tails, Py_NewRef(tails));
    kind_exact = exact; kind_wildcard = wildcard; kind_exception = exception;
    Py_RETURN_NONE;
}

/* _records: the records' list; with `resolved`, A and AAAA addresses are added to it. */
static int put_records(Buf *b, PyObject *records, span_t *resolved, int *n_resolved) {
    int rc;
    if ((rc = PUTS(b, "["))) return rc;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(records); i++) {
        PyObject *rr = PyTuple_GET_ITEM(records, i);
        if (!IS_A(r_record, rr)) return JSON_FALLBACK;
        PyObject *name = SLOT(r_record, rr, 0), *type = SLOT(r_record, rr, 1), *class_ = SLOT(r_record, rr, 2),
                 *ttl = SLOT(r_record, rr, 3), *data = SLOT(r_record, rr, 4), *extra = SLOT(r_record, rr, 5);
        if (!name || !type || !class_ || !ttl || !data || !extra || !PyDict_CheckExact(extra)) return JSON_FALLBACK;
        if (i && (rc = PUTS(b, ","))) return rc;
        if ((rc = PUTS(b, "{"))) return rc;
        /* the type's own keys first (dict(rr.extra)): str or int values only */
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(extra, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key) || record_key(key)) return JSON_FALLBACK;
            if ((rc = put_json(b, key)) || (rc = PUTS(b, ":"))) return rc;
            if ((rc = PyUnicode_CheckExact(value) ? put_json(b, value) : put_int(b, value))) return rc;
            if ((rc = PUTS(b, ","))) return rc;
        }
        long long type_v;
        if ((rc = as_ll(type, &type_v))) return rc;
        if ((rc = PUTS(b, "\"name\":")) || (rc = put_json(b, name))
            || (rc = PUTS(b, ",\"type\":")) || (rc = put_name(b, TypeNames, type, 0))
            || (rc = PUTS(b, ",\"class\":")) || (rc = put_name(b, ClassNames, class_, 0))
            || (rc = PUTS(b, ",\"ttl\":\"")) || (rc = put_int(b, ttl))
            || (rc = PUTS(b, "\",\"data\":")) || (rc = put_json(b, data)) || (rc = PUTS(b, "}")))
            return rc;
        /* An A/AAAA record whose RDATA was malformed carries hex, not an address. */
        if (resolved != NULL && (type_v == TYPE_A || type_v == TYPE_AAAA)) {
            const char *s;
            Py_ssize_t n;
            if ((rc = utf8(data, &s, &n))) return rc;
            if (memchr(s, '.', n) || memchr(s, ':', n)) {
                if (*n_resolved == MAX_RESOLVED) return JSON_FALLBACK;
                resolved[(*n_resolved)++] = (span_t){s, n};
            }
        }
    }
    return PUTS(b, "]");
}

/* A section's count, then (`shown`) its records: _dns_fields's "<label>_count", "<label>". */
static int put_section(Buf *b, const char *label, PyObject *records, int shown, span_t *resolved, int *n_resolved) {
    int rc;
    if (!PyTuple_CheckExact(records)) return JSON_FALLBACK;
    if ((rc = PUTS(b, ",\"")) || (rc = put(b, label, (Py_ssize_t)strlen(label)))
        || (rc = PUTS(b, "_count\":")) || (rc = put_ll(b, PyTuple_GET_SIZE(records))))
        return rc;
    if (!shown || PyTuple_GET_SIZE(records) == 0) return 0;
    if ((rc = PUTS(b, ",\"")) || (rc = put(b, label, (Py_ssize_t)strlen(label))) || (rc = PUTS(b, "\":")))
        return rc;
    return put_records(b, records, resolved, n_resolved);
}

/* _dns_fields of `msg` (the dns object without its "type"); A/AAAA addresses into resolved. */
static int put_dns_fields(Buf *b, PyObject *msg, int authorities, int additionals,
                          span_t *resolved, int *n_resolved) {
    static const char *flag_names[6] = {"authoritative", "truncated_response", "recursion_desired",
                                        "recursion_available", "authentic_data", "checking_disabled"};
    static const char *header_names[6] = {"AA", "TC", "RD", "RA", "AD", "CD"};
    PyObject *f[17];
    int rc;
    for (int i = 0; i < 17; i++)
        if ((f[i] = SLOT(r_message, msg, i)) == NULL) return JSON_FALLBACK;
    PyObject *questions = f[10], *edns = f[14];
    if ((rc = PUTS(b, "{\"id\":")) || (rc = put_int(b, f[0]))
        || (rc = PUTS(b, ",\"op_code\":")) || (rc = put_name(b, OpcodeNames, f[2], 0))
        || (rc = PUTS(b, ",\"flags\":{")))
        return rc;
    /* (`",\"" + first`: the text without its comma for the first item of an object or list) */
    for (int i = 0; i < 6; i++) {       /* AA TC RD RA AD CD: the message's fields 3 to 8 */
        if ((rc = put(b, ",\"" + !i, 2 - !i)) || (rc = put(b, flag_names[i], (Py_ssize_t)strlen(flag_names[i])))
            || (rc = PUTS(b, "\":")) || (rc = put_bool(b, f[3 + i])))
            return rc;
    }
    if ((rc = PUTS(b, "},\"response_code\":")) || (rc = put_name(b, RcodeNames, f[9], 1))
        || (rc = PUTS(b, ",\"header_flags\":[")))
        return rc;
    int first = 1;
    for (int i = 0; i < 6; i++) {
        if (f[3 + i] != Py_True) continue;
        if ((rc = put(b, ",\"" + first, 2 - first)) || (rc = put(b, header_names[i], 2)) || (rc = PUTS(b, "\"")))
            return rc;
        first = 0;
    }
    if (edns != Py_None) {
        if (!IS_A(r_edns, edns)) return JSON_FALLBACK;
        if (SLOT(r_edns, edns, 3) == Py_True && (rc = put(b, ",\"DO\"" + first, 5 - first))) return rc;
    }
    if ((rc = PUTS(b, "]"))) return rc;
    if (!PyTuple_CheckExact(questions)) return JSON_FALLBACK;
    if (PyTuple_GET_SIZE(questions)) {
        PyObject *q = PyTuple_GET_ITEM(questions, 0);
        if (!IS_A(r_question, q)) return JSON_FALLBACK;
        PyObject *name = SLOT(r_question, q, 0), *type = SLOT(r_question, q, 1), *class_ = SLOT(r_question, q, 2);
        if (!name || !type || !class_ || !PyUnicode_CheckExact(name)) return JSON_FALLBACK;
        if ((rc = PUTS(b, ",\"question\":{\"name\":")) || (rc = put_json(b, name))
            || (rc = PUTS(b, ",\"type\":")) || (rc = put_name(b, TypeNames, type, 0))
            || (rc = PUTS(b, ",\"class\":")) || (rc = put_name(b, ClassNames, class_, 0)))
            return rc;
        /* domain_parts(name)'s keys, as text: here, else decoders/dns.py _domain_parts_text */
        const char *s;
        Py_ssize_t n, at = b->len;
        if ((rc = utf8(name, &s, &n))) return rc;
        if ((rc = put_domain_parts(b, s, n)) == DECLINE) {
            b->len = at;
            PyObject *parts = PyObject_CallOneArg(PartsText, name);
            if (parts == NULL) return -1;
            rc = put_raw(b, parts);
            Py_DECREF(parts);
        }
        if (rc || (rc = PUTS(b, "}"))) return rc;
    }
    if (edns != Py_None) {
        PyObject *e[5];
        for (int i = 0; i < 5; i++)
            if ((e[i] = SLOT(r_edns, edns, i)) == NULL) return JSON_FALLBACK;
        long long ext_rcode;
        if ((rc = as_ll(e[1], &ext_rcode))) return rc;
        if (ext_rcode < 0 || ext_rcode > 0xFFFF || !PyDict_CheckExact(e[4])) return JSON_FALLBACK;
        PyObject *shifted = PyLong_FromLongLong(ext_rcode << 4);
        if (shifted == NULL) return -1;
        if ((rc = PUTS(b, ",\"opt\":{\"version\":\"")) || (rc = put_int(b, e[2]))
            || (rc = PUTS(b, "\",\"do\":")) || (rc = put_bool(b, e[3]))
            || (rc = PUTS(b, ",\"ext_rcode\":")) || (rc = put_name(b, RcodeNames, shifted, 1))
            || (rc = PUTS(b, ",\"udp_size\":")) || (rc = put_int(b, e[0]))) {
            Py_DECREF(shifted);
            return rc;
        }
        Py_DECREF(shifted);
        Py_ssize_t pos = 0;         /* opt.update(edns.options): new str keys, str values */
        PyObject *key, *value;
        while (PyDict_Next(e[4], &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key) || PyUnicode_CompareWithASCIIString(key, "version") == 0
                || PyUnicode_CompareWithASCIIString(key, "do") == 0
                || PyUnicode_CompareWithASCIIString(key, "ext_rcode") == 0
                || PyUnicode_CompareWithASCIIString(key, "udp_size") == 0)
                return JSON_FALLBACK;
            if ((rc = PUTS(b, ",")) || (rc = put_json(b, key)) || (rc = PUTS(b, ":")) || (rc = put_json(b, value)))
                return rc;
        }
        if ((rc = PUTS(b, "}"))) return rc;
    }
    if ((rc = put_section(b, "answers", f[11], 1, resolved, n_resolved))) return rc;
    if (*n_resolved) {
        if ((rc = PUTS(b, ",\"resolved_ip\":["))) return rc;
        for (int i = 0; i < *n_resolved; i++)
            if ((i && (rc = PUTS(b, ","))) || (rc = put_json_text(b, resolved[i].text, resolved[i].len))) return rc;
        if ((rc = PUTS(b, "]"))) return rc;
    }
    if ((rc = put_section(b, "authorities", f[12], authorities, NULL, NULL))) return rc;
    return put_section(b, "additionals", f[13], additionals, NULL, NULL);
}

/* related's text: the flow's addresses, then the resolved ones not yet in it. */
static int put_related(Buf *b, PyObject *client_ip, PyObject *server_ip, span_t *resolved, int n_resolved) {
    span_t ips[MAX_RESOLVED + 2];
    int n = 0, rc;
    if ((rc = utf8(client_ip, &ips[0].text, &ips[0].len)) || (rc = utf8(server_ip, &ips[1].text, &ips[1].len)))
        return rc;
    n = (ips[0].len == ips[1].len && memcmp(ips[0].text, ips[1].text, ips[0].len) == 0) ? 1 : 2;
    for (int i = 0; i < n_resolved; i++) {
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = ips[k].len == resolved[i].len && memcmp(ips[k].text, resolved[i].text, resolved[i].len) == 0;
        if (!seen) ips[n++] = resolved[i];
    }
    if ((rc = PUTS(b, "{\"ip\":["))) return rc;
    for (int i = 0; i < n; i++)
        if ((i && (rc = PUTS(b, ","))) || (rc = put_json_text(b, ips[i].text, ips[i].len))) return rc;
    return PUTS(b, "]}");
}

/* document(): dns (from the response, else the query), method, query and resource (from
   the query, else the response); related when an answer resolved addresses. */
static int put_document(Buf *b, Buf *related, PyObject *const *args) {
    PyObject *request = args[0], *response = args[1];
    int authorities = PyObject_IsTrue(args[2]), additionals = PyObject_IsTrue(args[3]), rc;
    if (authorities < 0 || additionals < 0) return -1;
    PyObject *shown = response != Py_None ? response : request, *asked = request != Py_None ? request : response;
    if (!IS_A(r_message, shown) || !IS_A(r_message, asked)) return JSON_FALLBACK;
    span_t resolved[MAX_RESOLVED];
    int n_resolved = 0;
    if ((rc = PUTS(b, "{\"dns\":"))
        || (rc = put_dns_fields(b, shown, authorities, additionals, resolved, &n_resolved))
        || (rc = response != Py_None ? PUTS(b, ",\"type\":\"answer\"}") : PUTS(b, ",\"type\":\"query\"}"))
        || (rc = PUTS(b, ",\"method\":")))
        return rc;
    PyObject *opcode = SLOT(r_message, asked, 2), *questions = SLOT(r_message, asked, 10);
    if (opcode == NULL || questions == NULL || !PyTuple_CheckExact(questions)) return JSON_FALLBACK;
    if ((rc = put_name(b, OpcodeNames, opcode, 0))) return rc;
    if (PyTuple_GET_SIZE(questions)) {
        /* "class IN, type A, <name>" (the numbers for names not in the dicts) */
        PyObject *q = PyTuple_GET_ITEM(questions, 0);
        if (!IS_A(r_question, q)) return JSON_FALLBACK;
        PyObject *name = SLOT(r_question, q, 0), *type = SLOT(r_question, q, 1), *class_ = SLOT(r_question, q, 2);
        if (!name || !type || !class_) return JSON_FALLBACK;
        Buf query;
        buf_init(&query);
        const char *s;
        Py_ssize_t n;
        if ((rc = PUTS(&query, "class ")) == 0 && (rc = put_name_raw(&query, ClassNames, class_, 0)) == 0
            && (rc = PUTS(&query, ", type ")) == 0 && (rc = put_name_raw(&query, TypeNames, type, 0)) == 0
            && (rc = PUTS(&query, ", ")) == 0 && (rc = put_raw(&query, name)) == 0
            && (rc = PUTS(b, ",\"query\":")) == 0)
            rc = put_json_text(b, query.data, query.len);
        buf_free(&query);
        if (rc || (rc = PUTS(b, ",\"resource\":")) || (rc = utf8(name, &s, &n)) || (rc = put_json_text(b, s, n)))
            return rc;
    }
    if ((rc = PUTS(b, "}"))) return rc;
    if (n_resolved) return put_related(related, args[4], args[5], resolved, n_resolved);
    return 0;
}

PyDoc_STRVAR(document_text_doc,
"document_text(request, response, include_authorities, include_additionals, client_ip, server_ip)\n"
"    -> (own, related) | None\n\n"
"decoders/dns.py document() of a transaction as JSON text: `own` the bytes orjson.dumps makes\n"
"of it without \"related\", `related` the text of that object (None without one); None: use\n"
"document().");

static PyObject *document_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "document_text() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (PartsText == NULL || r_message.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "document_text: configure() and configure_text() first");
        return NULL;
    }
    Buf b, related;
    buf_init(&b);
    buf_init(&related);
    PyObject *result = NULL;
    int rc = put_document(&b, &related, args);
    if (rc == 0) {
        PyObject *own = PyBytes_FromStringAndSize(b.data, b.len);
        PyObject *rel = related.len ? PyUnicode_DecodeUTF8(related.data, related.len, NULL) : Py_NewRef(Py_None);
        if (own != NULL && rel != NULL) result = PyTuple_Pack(2, own, rel);
        Py_XDECREF(own);
        Py_XDECREF(rel);
    } else if (rc == JSON_FALLBACK) {
        result = Py_NewRef(Py_None);
    }
    buf_free(&b);
    buf_free(&related);
    return result;
}

PyDoc_STRVAR(configure_text_doc,
"configure_text(TYPE_NAMES, CLASS_NAMES, OPCODE_NAMES, RCODE_NAMES, parts_text)\n\n"
"The names document_text() writes (decoders/dns.py's dicts) and the function that gives\n"
"a question name's domain parts as JSON text, given once.");

static PyObject *configure_text(PyObject *self, PyObject *args) {
    PyObject *types, *classes, *opcodes, *rcodes, *parts;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O:configure_text", &PyDict_Type, &types, &PyDict_Type, &classes,
                          &PyDict_Type, &opcodes, &PyDict_Type, &rcodes, &parts))
        return NULL;
    Py_XSETREF(TypeNames, Py_NewRef(types));
    Py_XSETREF(ClassNames, Py_NewRef(classes));
    Py_XSETREF(OpcodeNames, Py_NewRef(opcodes));
    Py_XSETREF(RcodeNames, Py_NewRef(rcodes));
    Py_XSETREF(PartsText, Py_NewRef(parts));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, decode_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"document_text", (PyCFunction)(void (*)(void))document_text, METH_FASTCALL, document_text_doc},
    {"configure_text", configure_text, METH_VARARGS, configure_text_doc},
    {"domain_parts_text", domain_parts_text, METH_O, domain_parts_text_doc},
    {"configure_suffixes", configure_suffixes, METH_VARARGS, configure_suffixes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wirebeat._dnscore",
    "The common DNS message in C (see decoders/dns.py decode_message).", -1, methods,
};

PyMODINIT_FUNC PyInit__dnscore(void) { return PyModule_Create(&module); }
