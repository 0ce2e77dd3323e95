/* An IP address as text, exactly as glibc's inet_ntop (so socket.inet_ntop and
 * wirebeat.ip.ip_text) writes it, without its sprintf per group: dotted decimal for
 * IPv4; for IPv6 lowercase hex groups without leading zeros, the first longest run of
 * two or more zero groups as "::", and the last 32 bits in dotted decimal after six zero
 * groups or after five and ffff (::a.b.c.d, ::ffff:a.b.c.d); and the way back, text to
 * packed bytes (ip_pack). Shared by beat/_speedups.c, beat/_flowcore.c and
 * beat/_doctext.c (static, compiled into each). */
#ifndef WIREBEAT_IPTEXT_H
#define WIREBEAT_IPTEXT_H

#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

/* Plain dotted decimal ("10.0.0.1": four parts of one to three digits, none above 255,
 * none with a leading zero) packed at out: 1; 0 for any other text. What it takes
 * inet_pton(AF_INET) takes too, to the same bytes, without glibc's strlen and search of a
 * string of digits for each character (~250 instructions an address); the rest is left
 * to inet_pton. */
static inline int dotted_pack(const char *s, size_t n, unsigned char out[4])
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    unsigned char parts[4];
    for (int part = 0; part < 4; part++) {
        if (part) {
            if (p == end || *p != '.') return 0;
            p++;
        }
        if (p == end || (unsigned)(*p - '0') > 9) return 0;
        unsigned v = (unsigned)(*p++ - '0');
        if (p < end && (unsigned)(*p - '0') <= 9) {
            if (v == 0) return 0;                               /* a leading zero */
            v = v * 10 + (unsigned)(*p++ - '0');
            if (p < end && (unsigned)(*p - '0') <= 9) v = v * 10 + (unsigned)(*p++ - '0');
        }
        if (v > 255) return 0;
        parts[part] = (unsigned char)v;
    }
    if (p != end) return 0;     /* (a fourth digit, or anything else, after the last part) */
    memcpy(out, parts, 4);
    return 1;
}

/* Address text (n bytes at s, NUL-terminated there) packed at out as socket.inet_pton reads
 * it, in the family wirebeat.ip.ip_packed picks (AF_INET6 when the text holds a ':'):
 * returns 4 or 16; 0 when the text is no address; -1 for a NUL inside the text (where
 * socket.inet_pton raises ValueError). */
static inline int ip_pack(const char *s, size_t n, unsigned char out[16])
{
    if (strlen(s) != n) return -1;
    int v6 = memchr(s, ':', n) != NULL;
    if (!v6 && dotted_pack(s, n, out)) return 4;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, s, out) != 1) return 0;
    return v6 ? 16 : 4;
}

/* Four bytes as dotted decimal at w; returns the end. */
static inline char *dotted_text(char *w, const unsigned char *a)
{
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (i) *w++ = '.';
        if (v >= 100) *w++ = (char)('0' + v / 100);
        if (v >= 10) *w++ = (char)('0' + v / 10 % 10);
        *w++ = (char)('0' + v % 10);
    }
    return w;
}

/* An address of alen (4 or 16) bytes as text at w (at most 45 characters); returns the end. */
static inline char *ip_text(char *w, const unsigned char *a, int alen)
{
    if (alen == 4) return dotted_text(w, a);
    unsigned words[8];
    int best = -1, best_len = 0, cur = -1, cur_len = 0;
    for (int i = 0; i < 8; i++) {
        words[i] = ((unsigned)a[2 * i] << 8) | a[2 * i + 1];
        if (words[i] == 0) {
            if (cur < 0) { cur = i; cur_len = 1; } else cur_len++;
        } else if (cur >= 0) {
            if (cur_len > best_len) { best = cur; best_len = cur_len; }
            cur = -1;
        }
    }
    if (cur >= 0 && cur_len > best_len) { best = cur; best_len = cur_len; }
    if (best_len < 2) best = -1;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + best_len) {
            if (i == best) *w++ = ':';
            continue;
        }
        if (i) *w++ = ':';
        if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)))
            return dotted_text(w, a + 12);
        unsigned v = words[i];
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned nib = (v >> shift) & 15;
            if (nib || started || shift == 0) { *w++ = "0123456789abcdef"[nib]; started = 1; }
        }
    }
    if (best >= 0 && best + best_len == 8) *w++ = ':';
    return w;
}

#endif
