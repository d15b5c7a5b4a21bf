/* orbithil host-link codec: COBS, CRC-16/CCITT-FALSE, frames and Hsiao SECDED.
 *
 * Compiled by hal/codec/build.py (cffi, API mode). build.py prepends a generated block
 * (tables from hal/codec/hmatrix.py, constants from hal/codec/frame_format.py) so the
 * numbers live in one place; this file holds only the algorithms.
 *
 * No function here allocates, and none reads or writes outside the lengths it is given:
 * the Python wrapper sizes every output buffer from the *_max_len helpers.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- CRC-16/CCITT-FALSE, table driven ---------------------------------------------- */
static uint16_t crc16_table[256];
static int crc16_ready = 0;

static void crc16_init_table(void)
{
    for (int b = 0; b < 256; b++) {
        uint16_t crc = (uint16_t)(b << 8);
        for (int i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ OHC_CRC16_POLY) : (uint16_t)(crc << 1);
        crc16_table[b] = crc;
    }
    crc16_ready = 1;
}

#define CRC16_STEP(crc, byte) \
    ((uint16_t)(((crc) << 8) ^ crc16_table[(((crc) >> 8) ^ (byte)) & 0xFF]))

uint16_t ohc_crc16(const uint8_t *src, size_t n, uint16_t crc)
{
    if (!crc16_ready)
        crc16_init_table();
    for (size_t i = 0; i < n; i++)
        crc = CRC16_STEP(crc, src[i]);
    return crc;
}

/* ---- COBS ------------------------------------------------------------------------------ */
size_t ohc_cobs_max_len(size_t n) { return n + n / 254 + 1; }

/* The encoder as a tiny state machine so a frame can be encoded in the same pass that
 * computes its CRC. */
typedef struct {
    uint8_t *out;
    size_t code_at; /* where the current group's code byte goes */
    size_t pos;     /* next free byte */
    uint8_t code;   /* 1 + bytes in the current group */
    int after_full; /* the last group closed was a full one (0xFF) and nothing came since */
} cobs_enc;

static inline void cobs_begin(cobs_enc *e, uint8_t *out, size_t start)
{
    e->out = out;
    e->code_at = start;
    e->pos = start + 1;
    e->code = 1;
    e->after_full = 0;
}

static inline void cobs_put(cobs_enc *e, uint8_t byte)
{
    e->after_full = 0;
    if (byte == 0) {
        e->out[e->code_at] = e->code;
        e->code_at = e->pos++;
        e->code = 1;
        return;
    }
    e->out[e->pos++] = byte;
    if (++e->code == 0xFF) {
        e->out[e->code_at] = 0xFF;
        e->code_at = e->pos++;
        e->code = 1;
        e->after_full = 1;
    }
}

/* Closes the last group. Input that ended exactly on a full group gets no empty group
 * after it (the shortest encoding, as the `cobs` package and the Python reference do). */
static inline size_t cobs_end(cobs_enc *e)
{
    if (e->after_full)
        return e->pos - 1;
    e->out[e->code_at] = e->code;
    return e->pos;
}

size_t ohc_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst)
{
    /* Bulk path: copy runs of non-zero bytes with memcpy-like speed. */
    size_t out = 0;
    size_t i = 0;
    for (;;) {
        size_t code_at = out++;
        size_t run = 0;
        while (i < n && run < 254 && src[i] != 0) {
            dst[out++] = src[i++];
            run++;
        }
        dst[code_at] = (uint8_t)(run + 1);
        if (run == 254) {
            /* A full group implies no zero. Input that ends here needs no empty group. */
            if (i >= n)
                break;
            continue;
        }
        if (i >= n)
            break;
        i++; /* the zero this group stands for */
    }
    return out;
}

/* Returns the decoded length, or -(1 + offset of the first bad byte). */
long ohc_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst)
{
    size_t i = 0, out = 0;
    while (i < n) {
        uint8_t code = src[i];
        if (code == 0)
            return -(long)(i + 1);
        size_t end = i + code;
        if (end > n)
            return -(long)(i + 1);
        for (size_t j = i + 1; j < end; j++) {
            uint8_t b = src[j];
            if (b == 0)
                return -(long)(j + 1);
            dst[out++] = b;
        }
        i = end;
        if (code != 0xFF && i < n)
            dst[out++] = 0;
    }
    return (long)out;
}

/* ---- frames ------------------------------------------------------------------------- */
size_t ohc_frame_max_len(size_t payload_len)
{
    return ohc_cobs_max_len(OHC_HEADER_LEN + payload_len + OHC_CRC_LEN) + 2;
}

/* 00 | COBS(version seq cmd len payload crc_hi crc_lo) | 00, CRC and COBS in one pass. */
size_t ohc_frame_encode(uint8_t version, uint8_t seq, uint8_t cmd, const uint8_t *payload,
                        size_t n, uint8_t *dst)
{
    if (!crc16_ready)
        crc16_init_table();
    cobs_enc e;
    uint16_t crc = OHC_CRC16_INIT;
    uint8_t header[OHC_HEADER_LEN] = {version, seq, cmd, (uint8_t)n};
    dst[0] = 0;
    cobs_begin(&e, dst, 1);
    for (int i = 0; i < OHC_HEADER_LEN; i++) {
        crc = CRC16_STEP(crc, header[i]);
        cobs_put(&e, header[i]);
    }
    for (size_t i = 0; i < n; i++) {
        crc = CRC16_STEP(crc, payload[i]);
        cobs_put(&e, payload[i]);
    }
    cobs_put(&e, (uint8_t)(crc >> 8));
    cobs_put(&e, (uint8_t)(crc & 0xFF));
    size_t len = cobs_end(&e);
    dst[len] = 0;
    return len + 1;
}

/* Decodes the bytes between two delimiters into body[] (at least n bytes). Returns an
 * OHC_FRAME_* status; on OHC_FRAME_OK *body_len is the decoded body length (header, payload
 * and CRC). COBS decoding and the CRC run in one pass. */
int ohc_frame_decode(const uint8_t *src, size_t n, uint8_t *body, size_t *body_len)
{
    if (!crc16_ready)
        crc16_init_table();
    uint16_t crc = OHC_CRC16_INIT;
    size_t i = 0, out = 0;
    while (i < n) {
        uint8_t code = src[i];
        if (code == 0)
            return OHC_FRAME_COBS;
        size_t end = i + code;
        if (end > n)
            return OHC_FRAME_COBS;
        for (size_t j = i + 1; j < end; j++) {
            uint8_t b = src[j];
            if (b == 0)
                return OHC_FRAME_COBS;
            body[out++] = b;
            crc = CRC16_STEP(crc, b);
        }
        i = end;
        if (code != 0xFF && i < n) {
            body[out++] = 0;
            crc = CRC16_STEP(crc, 0);
        }
    }
    *body_len = out;
    if (out < OHC_HEADER_LEN + OHC_CRC_LEN)
        return OHC_FRAME_BAD_LENGTH;
    if (crc != 0)
        return OHC_FRAME_BAD_CRC;
    if (body[0] != OHC_FRAME_VERSION)
        return OHC_FRAME_BAD_VERSION;
    if ((size_t)body[3] != out - OHC_HEADER_LEN - OHC_CRC_LEN)
        return OHC_FRAME_BAD_LENGTH;
    return OHC_FRAME_OK;
}

/* ---- SECDED (Hsiao), table driven --------------------------------------------------------
 * ohc_h32_bytes[b][v]: check bits contributed by value v in data byte b (generated).
 * ohc_syn32[s]: data bit to flip for syndrome s, or OHC_SYN_* (generated). Same for 64. */
static inline uint8_t check32(uint32_t d)
{
    return ohc_h32_bytes[0][d & 0xFF] ^ ohc_h32_bytes[1][(d >> 8) & 0xFF] ^
           ohc_h32_bytes[2][(d >> 16) & 0xFF] ^ ohc_h32_bytes[3][d >> 24];
}

static inline uint8_t check64(uint64_t d)
{
    uint8_t c = 0;
    for (int b = 0; b < 8; b++)
        c ^= ohc_h64_bytes[b][(d >> (8 * b)) & 0xFF];
    return c;
}

static inline uint8_t classify(uint8_t action, int k)
{
    if (action == OHC_SYN_OK)
        return OHC_SECDED_OK;
    if (action == OHC_SYN_CHECK_BIT || action < k)
        return OHC_SECDED_CORRECTED;
    return OHC_SECDED_UNCORRECTABLE;
}

void ohc_secded32_encode(const uint32_t *data, uint8_t *check, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check[i] = check32(data[i]);
}

void ohc_secded32_decode(const uint32_t *data, const uint8_t *check, uint32_t *out,
                         uint8_t *status, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t d = data[i];
        uint8_t action = ohc_syn32[(check32(d) ^ check[i]) & 0x7F];
        if (action < 32)
            d ^= (uint32_t)1 << action;
        out[i] = d;
        status[i] = classify(action, 32);
    }
}

void ohc_secded64_encode(const uint64_t *data, uint8_t *check, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check[i] = check64(data[i]);
}

void ohc_secded64_decode(const uint64_t *data, const uint8_t *check, uint64_t *out,
                         uint8_t *status, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t d = data[i];
        uint8_t action = ohc_syn64[check64(d) ^ check[i]];
        if (action < 64)
            d ^= (uint64_t)1 << action;
        out[i] = d;
        status[i] = classify(action, 64);
    }
}
