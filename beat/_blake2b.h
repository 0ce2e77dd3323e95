/* BLAKE2b (RFC 7693), unkeyed, and the urlsafe base64 of a 15-byte digest: the
 * document _id of wirebeat._nfcore (NetFlow records) and flow.id of wirebeat._flowcore,
 * each the same as hashlib.blake2b(..., digest_size=15) + base64.urlsafe_b64encode.
 * Included by both (static functions); listed in setup.py's `depends` and MANIFEST.in. */
#ifndef WIREBEAT_BLAKE2B_H
#define WIREBEAT_BLAKE2B_H

#include <stdint.h>
#include <string.h>


static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t m[16];     /* the block's little-endian words */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, sizeof m);
#else
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int j = 7; j >= 0; j--) w = (w << 8) | block[i * 8 + j];
        m[i] = w;
    }
#endif
    /* The working vector as sixteen locals and the twelve rounds written out, so that the
     * message schedule's indexes are constants; with the block's words copied at once on a
     * little-endian host, ~1.9k instructions a block instead of ~3.2k (callgrind). */
    uint64_t v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7],
             v8 = B2_IV[0], v9 = B2_IV[1], v10 = B2_IV[2], v11 = B2_IV[3],
             v12 = B2_IV[4] ^ t, v13 = B2_IV[5], v14 = last ? ~B2_IV[6] : B2_IV[6], v15 = B2_IV[7];
    /* (inputs below 2^64 bytes: the counter's high word stays 0) */
#define B2G(a, b, c, d, x, y) do { \
        a = a + b + (x); d = rotr64(d ^ a, 32); c = c + d; b = rotr64(b ^ c, 24); \
        a = a + b + (y); d = rotr64(d ^ a, 16); c = c + d; b = rotr64(b ^ c, 63); } while (0)
#define B2R(r) do { const uint8_t *s = B2_SIGMA[r]; \
        B2G(v0, v4, v8, v12, m[s[0]], m[s[1]]); B2G(v1, v5, v9, v13, m[s[2]], m[s[3]]); \
        B2G(v2, v6, v10, v14, m[s[4]], m[s[5]]); B2G(v3, v7, v11, v15, m[s[6]], m[s[7]]); \
        B2G(v0, v5, v10, v15, m[s[8]], m[s[9]]); B2G(v1, v6, v11, v12, m[s[10]], m[s[11]]); \
        B2G(v2, v7, v8, v13, m[s[12]], m[s[13]]); B2G(v3, v4, v9, v14, m[s[14]], m[s[15]]); } while (0)
    B2R(0); B2R(1); B2R(2); B2R(3); B2R(4); B2R(5); B2R(6); B2R(7); B2R(8); B2R(9); B2R(10); B2R(11);
#undef B2R
#undef B2G
    h[0] ^= v0 ^ v8; h[1] ^= v1 ^ v9; h[2] ^= v2 ^ v10; h[3] ^= v3 ^ v11;
    h[4] ^= v4 ^ v12; h[5] ^= v5 ^ v13; h[6] ^= v6 ^ v14; h[7] ^= v7 ^ v15;
}

static void blake2b(const uint8_t *in, size_t n, uint8_t *out, size_t outlen) {
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, B2_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ (uint64_t)outlen;
    uint64_t t = 0;
    while (n > 128) {
        t += 128;
        b2_compress(h, in, t, 0);
        in += 128;
        n -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, in, n);
    t += n;
    b2_compress(h, block, t, 1);
    for (size_t i = 0; i < outlen; i++) out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
}

/* urlsafe base64 of 15 bytes: 20 characters, no padding needed. */
static void id_text(const uint8_t d[15], char out[20]) {
    static const char *A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (int i = 0, o = 0; i < 15; i += 3, o += 4) {
        uint32_t w = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8) | d[i + 2];
        out[o] = A[w >> 18]; out[o + 1] = A[(w >> 12) & 63];
        out[o + 2] = A[(w >> 6) & 63]; out[o + 3] = A[w & 63];
    }
}

#endif
