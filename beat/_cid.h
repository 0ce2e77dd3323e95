/* SHA-1 (FIPS 180-4) of short messages and Community ID v1 (seed 0), shared by
 * beat/_speedups.c (transactions and per-packet documents) and beat/_flowcore.c (flow
 * reports): static functions, compiled into each extension that includes this file.
 * decoders/api.py / beat/document.py community_id_packed_python is the reference. */
#ifndef WIREBEAT_CID_H
#define WIREBEAT_CID_H
#include <stdint.h>
#include <string.h>

/* ---- SHA-1 (FIPS 180-4), for Community ID ---------------------------------- */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const unsigned char *b)
{
    /* The message schedule is kept as 16 words, each computed in the round that
     * uses it (a 80-word array made GCC vectorise it into store-forwarding stalls). */
    uint32_t w[16], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], t, x;
    int i;
    /* The loops written out (GCC and clang read these pragmas; others ignore them): the
     * round numbers become constants, so W's test and indexes fold away and the words
     * stay in registers: ~1.7k instructions a block instead of ~2.8k (callgrind). */
#pragma GCC unroll 16
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) | ((uint32_t)b[4 * i + 2] << 8) | b[4 * i + 3];
#define W(i) ((i) < 16 ? w[(i)] : (x = w[((i) + 13) & 15] ^ w[((i) + 8) & 15] ^ w[((i) + 2) & 15] ^ w[(i) & 15], \
                                   w[(i) & 15] = ROL(x, 1)))
#define ROUND(f, k) do { t = ROL(a, 5) + (f) + e + (k) + W(i); e = d; d = c; c = ROL(bb, 30); bb = a; a = t; } while (0)
#pragma GCC unroll 20
    for (i = 0; i < 20; i++) ROUND((bb & c) | (~bb & d), 0x5A827999);
#pragma GCC unroll 20
    for (; i < 40; i++) ROUND(bb ^ c ^ d, 0x6ED9EBA1);
#pragma GCC unroll 20
    for (; i < 60; i++) ROUND((bb & c) | (bb & d) | (c & d), 0x8F1BBCDC);
#pragma GCC unroll 20
    for (; i < 80; i++) ROUND(bb ^ c ^ d, 0xCA62C1D6);
#undef ROUND
#undef W
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
}

/* SHA-1 of a message of at most 119 bytes (two blocks after padding). */
static void sha1_short(const unsigned char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char buf[128];
    size_t total = len + 9 <= 64 ? 64 : 128, i;
    uint64_t bits = (uint64_t)len * 8;
    memset(buf, 0, sizeof buf);
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    for (i = 0; i < 8; i++)
        buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (i = 0; i < total; i += 64)
        sha1_block(h, buf + i);
    for (i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24); out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8); out[4 * i + 3] = (unsigned char)h[i];
    }
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Community ID v1, seed 0: "1:" + base64(sha1(...)), 30 characters written to out. */
static int icmp_peer(int v6, int type)
{
    if (!v6) {
        switch (type) {
        case 8: return 0; case 0: return 8; case 13: return 14; case 14: return 13;
        case 15: return 16; case 16: return 15; case 10: return 9; case 9: return 10;
        case 17: return 18; case 18: return 17;
        }
    } else {
        switch (type) {
        case 128: return 129; case 129: return 128; case 130: return 131; case 131: return 130;
        case 133: return 134; case 134: return 133; case 135: return 136; case 136: return 135;
        case 139: return 140; case 140: return 139; case 144: return 145; case 145: return 144;
        }
    }
    return -1;
}

static void community_id(int proto, const unsigned char *saddr, const unsigned char *daddr, int alen,
                         int sport, int dport, char *out)
{
    unsigned char msg[2 + 32 + 2 + 4], digest[20];
    int one_way = 0, n = 0, i;
    if (proto == 1 || proto == 58) {
        int peer = icmp_peer(proto == 58, sport);
        if (peer < 0) one_way = 1; else dport = peer;
    }
    int cmp = memcmp(saddr, daddr, alen);
    if (!(one_way || cmp < 0 || (cmp == 0 && sport < dport))) {
        const unsigned char *ta = saddr; saddr = daddr; daddr = ta;
        int tp = sport; sport = dport; dport = tp;
    }
    msg[n++] = 0; msg[n++] = 0;
    memcpy(msg + n, saddr, alen); n += alen;
    memcpy(msg + n, daddr, alen); n += alen;
    msg[n++] = (unsigned char)proto; msg[n++] = 0;
    msg[n++] = (unsigned char)(sport >> 8); msg[n++] = (unsigned char)sport;
    msg[n++] = (unsigned char)(dport >> 8); msg[n++] = (unsigned char)dport;
    sha1_short(msg, n, digest);
    out[0] = '1'; out[1] = ':';
    char *o = out + 2;
    for (i = 0; i < 18; i += 3) {
        uint32_t v = ((uint32_t)digest[i] << 16) | ((uint32_t)digest[i + 1] << 8) | digest[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = B64[v & 63];
    }
    uint32_t v = ((uint32_t)digest[18] << 16) | ((uint32_t)digest[19] << 8);
    *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63]; *o++ = '=';
}

#endif
