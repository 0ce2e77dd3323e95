/* JSON text written into a growing buffer, as orjson.dumps writes it: shared by
   beat/_doctext.c (transaction documents) and beat/_dnscore.c (DNS's part of them).

   Buf starts on the caller's stack (2 KiB, enough for nearly every document) and moves
   to the heap when a write does not fit. The writers return 0, -1 with a Python error
   set (memory), or JSON_FALLBACK: a value they do not write exactly as orjson does (not
   an exact str, an int past 64 bits, text that is not valid UTF-8): the caller then
   leaves the document to its Python path. */
#ifndef WIREBEAT_JSONTEXT_H
#define WIREBEAT_JSONTEXT_H

#include <Python.h>
#include <string.h>

#define JSON_FALLBACK (-2)

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    char small[2048];
} Buf;

static void buf_init(Buf *b) { b->data = b->small; b->len = 0; b->cap = sizeof b->small; }
static void buf_free(Buf *b) { if (b->data != b->small) PyMem_Free(b->data); }

static int buf_grow_slow(Buf *b, Py_ssize_t more) {
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + more) cap *= 2;
    char *data = PyMem_Malloc(cap);
    if (data == NULL) { PyErr_NoMemory(); return -1; }
    memcpy(data, b->data, b->len);
    if (b->data != b->small) PyMem_Free(b->data);
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Room for `more` bytes. Inline: a document makes ~50 writes, nearly all of which fit
   the 2 KiB on the stack; the call per write cost more than the check. */
static inline int buf_grow(Buf *b, Py_ssize_t more) {
    return b->len + more <= b->cap ? 0 : buf_grow_slow(b, more);
}

__attribute__((always_inline)) static inline int put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

#define PUTS(b, lit) put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* A 64-bit integer in decimal, as "%lld" writes it (snprintf costs ~700 instructions a call). */
static int put_ll(Buf *b, long long v) {
    char tmp[24], *end = tmp + sizeof tmp, *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *--p = '-';
    return put(b, p, end - p);
}

/* A str's UTF-8 (raw, as f-strings put it); JSON_FALLBACK unless exactly a valid str. */
static int utf8(PyObject *o, const char **s, Py_ssize_t *n) {
    if (!PyUnicode_CheckExact(o)) return JSON_FALLBACK;
    *s = PyUnicode_AsUTF8AndSize(o, n);
    if (*s == NULL) { PyErr_Clear(); return JSON_FALLBACK; }
    return 0;
}

static int put_raw(Buf *b, PyObject *o) {
    const char *s;
    Py_ssize_t n;
    int rc = utf8(o, &s, &n);
    return rc ? rc : put(b, s, n);
}

/* n bytes of UTF-8 as a JSON string, as orjson.dumps writes it: " and \ escaped, \b \t
   \n \f \r, other controls as \u00XX, everything else (DEL, '/', non-ASCII) as is. */
static int put_json_text(Buf *b, const char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (buf_grow(b, n * 6 + 2) < 0) return -1;
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *out++ = (char)c; continue; }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            *out++ = 'u'; *out++ = '0'; *out++ = '0';
            *out++ = hex[c >> 4]; *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

/* A str as a JSON string; JSON_FALLBACK unless exactly a valid str. */
static int put_json(Buf *b, PyObject *o) {
    const char *s;
    Py_ssize_t n;
    int rc = utf8(o, &s, &n);
    return rc ? rc : put_json_text(b, s, n);
}

/* An exact int that fits in 64 bits; JSON_FALLBACK otherwise (bool included). */
static int as_ll(PyObject *o, long long *v) {
    if (!PyLong_CheckExact(o)) return JSON_FALLBACK;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (*v == -1 && PyErr_Occurred())) { PyErr_Clear(); return JSON_FALLBACK; }
    return 0;
}

#endif
