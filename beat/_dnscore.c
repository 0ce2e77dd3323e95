/* wirebeat._dnscore: the common DNS message in C, for decoders/dns.py decode_message.

   `decode(data)` reads what most DNS traffic is: a header, its questions, records of
   type A, AAAA, CNAME, NS, PTR and DNAME in the answer, authority and additional
   sections, and an EDNS OPT record without options, with every name read as
   decoders/dns.py read_name reads it (compression, the same limits, the same escapes). It returns the same DNSMessage decode_message returns, made of the same
   classes (given once by `configure`), or None for anything else: another record type
   (MX, TXT, SOA...), EDNS options, a second OPT, a name or record that does not read
   or does not fill its record, a question or record past the end. decode_message then reads the message in Python, which is the reference
   (it raises, or notes what was wrong); tests/beat/test_dnscore.py runs both on the same
   messages, hostile ones included. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

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

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, decode_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wirebeat._dnscore",
    "The common DNS message in C (see decoders/dns.py decode_message).", -1, methods,
};

PyMODINIT_FUNC PyInit__dnscore(void) { return PyModule_Create(&module); }
