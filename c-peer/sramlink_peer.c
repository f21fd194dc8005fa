/*
 * sramlink_peer.c - a clean-room sramlink peer written from docs/ABI.md alone (1.0, then
 * brought to 1.1 from the document's 1.1 sections: sessions 5.7, liveness 5.8/5.9, flags 1.1).
 *
 * Usage: sramlink_peer FILE OFFSET SIZE COUNT
 *
 * Maps FILE (MAP_SHARED) at OFFSET for SIZE bytes, attaches as the peer (ABI.md section 5) and,
 * with a 1.1 guest, starts a session (5.7),
 * makes COUNT ping round trips (EchoRequest / EchoReply, 64 payload bytes, seq from 0,
 * section 7), sends Stop, waits for the guest's Stats and prints one summary line.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -o sramlink_peer c-peer/sramlink_peer.c
 *
 * Every shared-memory access is a naturally aligned 32- or 64-bit volatile load or store
 * (section 1); every shared value is loaded once, validated, and only the local copy is used
 * (section 4.3).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "this peer assumes a little-endian host (the ABI is little-endian, section 1)"
#endif
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "supported hosts: x86_64 and AArch64 Linux"
#endif

/* ------------------------------------------------------------------------------------------ */
/* Barriers (section 4)                                                                        */
/* ------------------------------------------------------------------------------------------ */

#if defined(__aarch64__)
#define BARRIER_ACQUIRE() __asm__ __volatile__("dmb ishld" ::: "memory")
#define BARRIER_STORESTORE() __asm__ __volatile__("dmb ishst" ::: "memory")
#define BARRIER_LOADSTORE() __asm__ __volatile__("dmb ishld" ::: "memory")
#define BARRIER_FULL() __asm__ __volatile__("dmb ish" ::: "memory")
#else
#define BARRIER_ACQUIRE() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define BARRIER_STORESTORE() __atomic_thread_fence(__ATOMIC_RELEASE)
#define BARRIER_LOADSTORE() __atomic_thread_fence(__ATOMIC_RELEASE)
#define BARRIER_FULL() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

/* ------------------------------------------------------------------------------------------ */
/* Layout (section 2.1)                                                                        */
/* ------------------------------------------------------------------------------------------ */

#define MAGIC UINT64_C(0x4B4E494C4D415253) /* "SRAMLINK" little-endian */
#define OFF_MAGIC 0x000u
#define OFF_VERSION 0x008u /* u16 major | u16 minor << 16, read as one u32 */
#define OFF_HEADER_BYTES 0x00cu
#define OFF_REGION_BYTES 0x010u
#define OFF_RING_COUNT 0x018u
#define OFF_RING_DESC(i) (0x020u + 0x10u * (unsigned)(i)) /* u64 data_offset, u32 data_bytes */
#define OFF_GUEST_STATE 0x040u
#define OFF_PEER_STATE 0x044u
#define OFF_RING0_PRODUCER 0x080u
#define OFF_RING0_CONSUMER 0x0c0u
#define OFF_RING1_PRODUCER 0x100u
#define OFF_RING1_CONSUMER 0x140u
#define HEADER_MIN 0x180u
/* 1.1 (2.1): flags bit 0, lines 6 (guest) and 7 (peer) */
#define OFF_FLAGS 0x01cu
#define FLAG_CACHEABLE 1u
#define HEADER_1_1 0x200u
#define OFF_GENERATION 0x180u
#define OFF_GUEST_HEARTBEAT 0x184u
#define OFF_SESSION_ACK 0x188u
#define OFF_SESSION_RING0_START 0x18cu
#define OFF_EVENT_PORT 0x190u
#define OFF_GUEST_WAITING 0x194u
#define OFF_SESSION_REQUEST 0x1c0u
#define OFF_SESSION_GENERATION 0x1c4u
#define OFF_SESSION_RING1_START 0x1c8u
#define OFF_PEER_HEARTBEAT 0x1ccu
#define LIVENESS_SECONDS 2.0  /* guest heartbeat standing still this long: dead (5.8) */
#define TAKEOVER_SECONDS 0.25 /* previous peer's heartbeat watched this long (5.7) */

#define STATE_OFFLINE 0u
#define STATE_READY 1u
#define STATE_STOPPED 2u

#define KIND_MESSAGE 0u
#define KIND_PADDING 1u

/* Demo protocol (section 7) */
#define OP_ECHO_REQUEST 1u
#define OP_ECHO_REPLY 2u
#define OP_DATA 3u
#define OP_STREAM_REQUEST 4u
#define OP_STOP 5u
#define OP_STATS 6u
#define MSG_HEADER_BYTES 24u
#define PING_PAYLOAD 64u
#define STATS_PAYLOAD 40u
#define MAX_WORDS ((MSG_HEADER_BYTES + PING_PAYLOAD + 7u) / 8u) /* largest message we send/read */

#define WAIT_SECONDS 30.0

static const char *g_prog = "c-peer";
static bool g_attached;  /* peer_state has been set Ready */
static bool g_restarted; /* the guest re-created the header: store nothing (5.9) */
static void set_peer_state(uint32_t s);

/* Report a failed check and exit 1. Once attached, first set peer_state Stopped: this side will
 * not touch the rings again (section 5) - unless the header is a new guest's (5.9). */
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    if (g_attached && !g_restarted) {
        g_attached = false;
        set_peer_state(2u);
    }
    fprintf(stderr, "%s: error: ", g_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ------------------------------------------------------------------------------------------ */
/* Shared-memory access: aligned 32/64-bit volatile loads and stores only (section 1)          */
/* ------------------------------------------------------------------------------------------ */

static const char *g_path = ""; /* the mapped file (FILE) */
static volatile uint8_t *g_base; /* the mapped region */
static uint64_t g_mapped;        /* bytes mapped */

static inline uint32_t load32(uint64_t off)
{
    return *(volatile uint32_t *)(g_base + off);
}
static inline uint64_t load64(uint64_t off)
{
    return *(volatile uint64_t *)(g_base + off);
}
static inline void store32(uint64_t off, uint32_t v)
{
    *(volatile uint32_t *)(g_base + off) = v;
}
static inline void store64(uint64_t off, uint64_t v)
{
    *(volatile uint64_t *)(g_base + off) = v;
}

/* ------------------------------------------------------------------------------------------ */
/* Time and bounded waiting                                                                    */
/* ------------------------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct waiter {
    double deadline;
    unsigned spins;
};

static void waiter_init(struct waiter *w, double seconds)
{
    w->deadline = now_s() + seconds;
    w->spins = 0;
}

/* 1.1 liveness (5.8, 5.9): our heartbeat, and what we know of the guest's. */
static bool g_sessions;          /* the header has the 1.1 lines */
static uint32_t g_generation;    /* the generation we attached to */
static uint32_t g_beat;          /* our heartbeat value */
static uint32_t g_guest_beat;    /* the guest's heartbeat when last seen moving */
static double g_guest_moved;     /* when it last moved */

static void beat(void)
{
    if (g_sessions)
        store32(OFF_PEER_HEARTBEAT, ++g_beat);
}

/* One idle step: spin a little, then sleep. Returns false once the deadline has passed. */
static bool waiter_idle(struct waiter *w)
{
    beat();
    if (w->spins < 2000) {
        w->spins++;
#if defined(__aarch64__)
        __asm__ __volatile__("yield" ::: "memory");
#else
        __asm__ __volatile__("pause" ::: "memory");
#endif
        if ((w->spins & 255u) != 0)
            return true;
    } else {
        struct timespec ts = {0, 50000}; /* 50 us */
        nanosleep(&ts, NULL);
    }
    return now_s() < w->deadline;
}

/* ------------------------------------------------------------------------------------------ */
/* CRC-32/IEEE (section 7): reflected 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF         */
/* ------------------------------------------------------------------------------------------ */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        crc_table[n] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    return crc;
}

static uint32_t crc32_buf(const uint8_t *p, size_t n)
{
    return crc_update(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------------------------------------------ */
/* Payload pattern (section 7)                                                                 */
/* ------------------------------------------------------------------------------------------ */

static inline uint64_t pattern_word(uint64_t seq, uint64_t k)
{
    return seq * UINT64_C(0x9E3779B97F4A7C15) + (k + 1) * UINT64_C(0xD6E8FEB86659FD93);
}

/* Fill n bytes (local memory) with pattern(seq, n). */
static void pattern_fill(uint64_t seq, uint8_t *out, uint32_t n)
{
    for (uint32_t i = 0; i < n; i += 8) {
        uint64_t w = pattern_word(seq, i / 8u);
        uint32_t take = (n - i < 8u) ? n - i : 8u;
        for (uint32_t b = 0; b < take; b++)
            out[i + b] = (uint8_t)(w >> (8u * b));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Rings (sections 3 and 4)                                                                    */
/* ------------------------------------------------------------------------------------------ */

struct ring_geom {
    uint64_t data_offset;
    uint32_t size; /* data_bytes */
    uint32_t mask;
    uint32_t max_msg; /* data_bytes / 2 - 8 */
};

/* Producer (section 4.1): local state only. */
struct producer {
    struct ring_geom g;
    uint64_t off_producer, off_consumer;
    uint32_t head, published, cached_c;
    uint32_t slot_off; /* offset in the data area of the reserved record */
};

/* Consumer (section 4.2): local state only. */
struct consumer {
    struct ring_geom g;
    uint64_t off_producer, off_consumer;
    uint32_t tail, released, cached_p;
};

static uint32_t record_bytes(uint32_t len)
{
    return 8u + ((len + 7u) & ~7u);
}

enum reserve_result { RESERVE_OK, RESERVE_FULL };

static enum reserve_result prod_reserve(struct producer *p, uint32_t len)
{
    if (len > p->g.max_msg)
        die("producer: message of %" PRIu32 " bytes exceeds the maximum %" PRIu32 " (3.2)", len,
            p->g.max_msg);
    uint32_t R = record_bytes(len);
    uint32_t off = p->head & p->g.mask;
    uint32_t contig = p->g.size - off;
    uint32_t need = (R <= contig) ? R : contig + R;
    if (p->g.size - (uint32_t)(p->head - p->cached_c) < need) {
        uint32_t c = load32(p->off_consumer); /* once */
        if (c % 8u != 0)
            die("ring 1 consumer index 0x%" PRIx32 " is not a multiple of 8 (4.1/4.3)", c);
        if ((uint32_t)(c - p->cached_c) > (uint32_t)(p->published - p->cached_c))
            die("ring 1 consumer index 0x%" PRIx32 " is not between the previous value 0x%" PRIx32
                " and our published producer index 0x%" PRIx32 " (4.1/4.3)",
                c, p->cached_c, p->published);
        BARRIER_ACQUIRE();
        p->cached_c = c;
        if (p->g.size - (uint32_t)(p->head - p->cached_c) < need)
            return RESERVE_FULL;
    }
    if (R > contig) {
        store64(p->g.data_offset + off, (uint64_t)(contig - 8u) | ((uint64_t)KIND_PADDING << 32));
        p->head += contig;
        off = 0;
    }
    p->slot_off = off;
    return RESERVE_OK;
}

/* Write the message words (the last partial word already zero-filled by the caller) and commit. */
static void prod_write_commit(struct producer *p, const uint64_t *words, uint32_t len)
{
    uint64_t base = p->g.data_offset + p->slot_off;
    uint32_t nwords = (len + 7u) / 8u;
    for (uint32_t k = 0; k < nwords; k++)
        store64(base + 8u + 8u * k, words[k]);
    store64(base, (uint64_t)len | ((uint64_t)KIND_MESSAGE << 32));
    p->head += record_bytes(len);
}

static void prod_publish(struct producer *p)
{
    if (p->head != p->published) {
        BARRIER_STORESTORE();
        store32(p->off_producer, p->head);
        p->published = p->head;
    }
}

/* A message found by cons_read: its location and validated length. */
struct msg {
    uint64_t payload_off; /* absolute offset in the region of the record payload */
    uint32_t len;
    uint32_t R;
};

/* Returns true with *m filled, false when the ring is empty. Dies on a protocol error. */
static bool cons_read(struct consumer *c, struct msg *m)
{
    for (int pass = 0; pass < 2; pass++) {
        if (c->tail == c->cached_p) {
            uint32_t p = load32(c->off_producer); /* once */
            if (p % 8u != 0)
                die("ring 0 producer index 0x%" PRIx32 " is not a multiple of 8 (4.2/4.3)", p);
            if ((uint32_t)(p - c->released) > c->g.size)
                die("ring 0 producer index 0x%" PRIx32 " is more than data_bytes ahead of our "
                    "released consumer index 0x%" PRIx32 " (4.2/4.3)",
                    p, c->released);
            if ((uint32_t)(p - c->released) < (uint32_t)(c->cached_p - c->released))
                die("ring 0 producer index 0x%" PRIx32 " went backwards from 0x%" PRIx32
                    " (4.2/4.3)",
                    p, c->cached_p);
            BARRIER_ACQUIRE();
            c->cached_p = p;
            if (p == c->tail)
                return false;
        }
        uint32_t off = c->tail & c->g.mask;
        uint32_t contig = c->g.size - off;
        uint32_t avail = c->cached_p - c->tail;
        uint64_t h = load64(c->g.data_offset + off); /* once */
        uint32_t len = (uint32_t)h;
        uint32_t kind = (uint32_t)(h >> 32);
        if (kind == KIND_MESSAGE) {
            if (len > c->g.max_msg)
                die("ring 0 record at position 0x%" PRIx32 ": len %" PRIu32
                    " exceeds the maximum message %" PRIu32 " (4.2/4.3)",
                    c->tail, len, c->g.max_msg);
            uint32_t R = record_bytes(len);
            if (R > avail)
                die("ring 0 record at position 0x%" PRIx32 ": %" PRIu32
                    " bytes exceed the %" PRIu32 " published bytes (4.2/4.3)",
                    c->tail, R, avail);
            if (R > contig)
                die("ring 0 record at position 0x%" PRIx32 ": %" PRIu32
                    " bytes cross the end of the data area (4.2/4.3)",
                    c->tail, R);
            m->payload_off = c->g.data_offset + off + 8u;
            m->len = len;
            m->R = R;
            return true;
        }
        if (kind == KIND_PADDING) {
            if (off == 0)
                die("ring 0 padding record at data offset 0 (4.2/4.3)");
            if (len != contig - 8u)
                die("ring 0 padding record at offset 0x%" PRIx32 ": len %" PRIu32
                    " != contig - 8 = %" PRIu32 " (4.2/4.3)",
                    off, len, contig - 8u);
            if (contig > avail)
                die("ring 0 padding record at offset 0x%" PRIx32
                    " extends past the published bytes (4.2/4.3)",
                    off);
            c->tail += contig;
            continue;
        }
        die("ring 0 record at position 0x%" PRIx32 ": unknown kind %" PRIu32 " (3.2/4.3)", c->tail,
            kind);
    }
    die("ring 0: two padding records in a row (4.2)");
}

static void cons_release(struct consumer *c, const struct msg *m)
{
    c->tail += m->R;
}

static void cons_publish(struct consumer *c)
{
    if (c->tail != c->released) {
        BARRIER_LOADSTORE();
        store32(c->off_consumer, c->tail);
        c->released = c->tail;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* State words (section 5)                                                                     */
/* ------------------------------------------------------------------------------------------ */

static uint32_t read_guest_state(void)
{
    uint32_t s = load32(OFF_GUEST_STATE); /* once */
    BARRIER_ACQUIRE();
    if (s > STATE_STOPPED)
        die("guest_state word holds %" PRIu32 ", not 0, 1 or 2 (4.3/5)", s);
    return s;
}

static void set_peer_state(uint32_t s)
{
    BARRIER_FULL();
    store32(OFF_PEER_STATE, s);
}

/* 1.1: the header is still the one we attached to (5.9), and the guest's heartbeat moved
 * within LIVENESS_SECONDS unless it sleeps armed (5.8, 4.6). Called on idle steps. */
static void check_guest_alive(const char *what)
{
    if (!g_sessions)
        return;
    uint64_t m = load64(OFF_MAGIC);
    uint32_t g = load32(OFF_GENERATION);
    BARRIER_ACQUIRE();
    if (m != MAGIC || g != g_generation) {
        g_restarted = true;
        die("the guest re-created the region (generation 0x%" PRIx32 " -> 0x%" PRIx32
            ", magic %s) while waiting for %s: it restarted; nothing stored (5.9)",
            g_generation, g, m == MAGIC ? "valid" : "cleared", what);
    }
    uint32_t hb = load32(OFF_GUEST_HEARTBEAT);
    if (hb != g_guest_beat || load32(OFF_GUEST_WAITING) == 1u) {
        g_guest_beat = hb;
        g_guest_moved = now_s();
    } else if (now_s() - g_guest_moved >= LIVENESS_SECONDS) {
        die("the guest's heartbeat has not moved for %.1f s while waiting for %s: the guest is "
            "not running (5.8)",
            LIVENESS_SECONDS, what);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Attach (section 5) with header validation (sections 2.1, 2.2, 4.3)                           */
/* ------------------------------------------------------------------------------------------ */

static void validate_ring(int i, uint64_t data_offset, uint32_t data_bytes, uint32_t header_bytes,
                          uint64_t region_bytes)
{
    if (data_offset % 4096u != 0)
        die("ring %d data_offset 0x%" PRIx64 " is not a multiple of 4096 (2.2)", i, data_offset);
    if (data_offset < header_bytes)
        die("ring %d data_offset 0x%" PRIx64 " is below header_bytes 0x%" PRIx32 " (2.1/2.2)", i,
            data_offset, header_bytes);
    if (data_bytes < 64u || data_bytes > UINT32_C(0x80000000) ||
        (data_bytes & (data_bytes - 1u)) != 0)
        die("ring %d data_bytes 0x%" PRIx32 " is not a power of two in [64, 2^31] (2.2)", i,
            data_bytes);
    if (data_offset > region_bytes || data_bytes > region_bytes - data_offset)
        die("ring %d data area 0x%" PRIx64 "+0x%" PRIx32 " exceeds region_bytes 0x%" PRIx64
            " (2.2)",
            i, data_offset, data_bytes, region_bytes);
}

/* 5.7: start a session. Ring 1 starts where the previous peer's last publish left it, ring 0
 * where the guest's acknowledgement says; nothing older is ever read. */
static void attach_session(struct consumer *rx, struct producer *tx)
{
    struct waiter w;
    g_guest_beat = load32(OFF_GUEST_HEARTBEAT);
    g_guest_moved = now_s();
    g_beat = load32(OFF_PEER_HEARTBEAT);
    /* peer_state Ready: a previous peer was killed, or still runs. Watch its heartbeat. */
    if (load32(OFF_PEER_STATE) == STATE_READY) {
        uint32_t first = load32(OFF_PEER_HEARTBEAT);
        double until = now_s() + TAKEOVER_SECONDS;
        while (now_s() < until) {
            if (load32(OFF_PEER_HEARTBEAT) != first)
                die("another peer is attached and alive (peer_state Ready, its heartbeat "
                    "moves): two peers on one ring would corrupt it (5.7)");
            check_guest_alive("the previous peer's heartbeat");
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        g_beat = load32(OFF_PEER_HEARTBEAT);
    }
    uint32_t previous = load32(OFF_SESSION_REQUEST);
    uint32_t acked = load32(OFF_SESSION_ACK);
    uint32_t session = previous + 1u;
    while (session == 0u || session == acked)
        session++;
    uint32_t p1 = load32(OFF_RING1_PRODUCER); /* our own index (the previous peer's last) */
    if (p1 % 8u)
        die("ring 1 producer index 0x%" PRIx32 " is not a multiple of 8 (4.3)", p1);
    store32(OFF_SESSION_GENERATION, g_generation);
    store32(OFF_SESSION_RING1_START, p1);
    BARRIER_FULL();
    store32(OFF_SESSION_REQUEST, session);
    set_peer_state(STATE_READY);
    g_attached = true;

    waiter_init(&w, WAIT_SECONDS);
    while (load32(OFF_SESSION_ACK) != session) {
        if (read_guest_state() != STATE_READY)
            die("guest_state left Ready while waiting for the session acknowledgement (5.7)");
        check_guest_alive("the session acknowledgement");
        if (!waiter_idle(&w))
            die("timed out after %.0f s waiting for the guest to acknowledge session %" PRIu32
                " (5.7)",
                WAIT_SECONDS, session);
    }
    BARRIER_ACQUIRE();
    uint32_t g0 = load32(OFF_SESSION_RING0_START);
    uint32_t p0 = load32(OFF_RING0_PRODUCER);
    BARRIER_ACQUIRE();
    if (g0 % 8u || (uint32_t)(p0 - g0) > rx->g.size)
        die("session_ring0_start 0x%" PRIx32 " is not a record boundary within the guest's "
            "published ring 0 (P=0x%" PRIx32 ") (5.7)",
            g0, p0);
    store32(OFF_RING0_CONSUMER, g0);
    rx->tail = rx->released = rx->cached_p = g0;
    tx->head = tx->published = tx->cached_c = p1;
    uint32_t port = load32(OFF_EVENT_PORT);
    if (port != 0u)
        fprintf(stderr, "%s: the guest publishes event port %" PRIu32 "; this peer polls (4.6)\n",
                g_prog, port);
}

static void attach(struct consumer *rx, struct producer *tx)
{
    struct waiter w;

    /* 1. Poll the magic (with a timeout), then ACQUIRE. */
    waiter_init(&w, WAIT_SECONDS);
again:
    for (;;) {
        uint64_t m = load64(OFF_MAGIC);
        if (m == MAGIC)
            break;
        if (!waiter_idle(&w))
            die("timed out after %.0f s waiting for the magic \"SRAMLINK\" (5, attach step 1)",
                WAIT_SECONDS);
    }
    BARRIER_ACQUIRE();
    /* 5.3 step 2: the generation word now, re-checked after the header reads (seqlock). */
    uint32_t generation = load32(OFF_GENERATION);

    /* 2. Validate the header, each field loaded once, and keep a local copy of the geometry. */
    uint32_t version = load32(OFF_VERSION);
    uint32_t major = version & 0xffffu;
    uint32_t minor = version >> 16;
    if (major != 1u)
        die("version_major is %" PRIu32 " (minor %" PRIu32 "); only 1 is implemented (2.1/6)",
            major, minor);
    uint32_t header_bytes = load32(OFF_HEADER_BYTES);
    if (header_bytes < HEADER_MIN || header_bytes > 4096u)
        die("header_bytes 0x%" PRIx32 " is not within [0x180, 4096] (2.1)", header_bytes);
    uint64_t region_bytes = load64(OFF_REGION_BYTES);
    if (region_bytes > g_mapped)
        die("region_bytes 0x%" PRIx64 " exceeds the 0x%" PRIx64 " bytes mapped (2.1)",
            region_bytes, g_mapped);
    uint32_t ring_count = load32(OFF_RING_COUNT);
    if (ring_count != 2u)
        die("ring_count is %" PRIu32 ", not 2 (2.1)", ring_count);
    uint32_t flags = load32(OFF_FLAGS);
    uint64_t doff[2];
    uint32_t dbytes[2];
    for (int i = 0; i < 2; i++) {
        doff[i] = load64(OFF_RING_DESC(i));
        dbytes[i] = load32(OFF_RING_DESC(i) + 8u);
        if (header_bytes > doff[i])
            die("header_bytes 0x%" PRIx32 " exceeds ring %d data_offset 0x%" PRIx64 " (2.1)",
                header_bytes, i, doff[i]);
        validate_ring(i, doff[i], dbytes[i], header_bytes, region_bytes);
    }
    /* Non-overlap: each area ends at or before the other begins (sums cannot overflow: both are
     * <= region_bytes <= mapped size). */
    if (!(doff[0] + dbytes[0] <= doff[1] || doff[1] + dbytes[1] <= doff[0]))
        die("ring data areas 0x%" PRIx64 "+0x%" PRIx32 " and 0x%" PRIx64 "+0x%" PRIx32
            " overlap (2.2)",
            doff[0], dbytes[0], doff[1], dbytes[1]);
    /* 5.3 step 2: ACQUIRE, then magic and generation again; changed = being re-created. */
    BARRIER_ACQUIRE();
    if (load64(OFF_MAGIC) != MAGIC || load32(OFF_GENERATION) != generation) {
        if (!waiter_idle(&w))
            die("timed out after %.0f s: the header kept changing while read (5.3)",
                WAIT_SECONDS);
        goto again;
    }
    g_sessions = minor >= 1u && header_bytes >= HEADER_1_1;
    g_generation = generation;
    /* 1.1: flags bit 0 records the guest's mapping (1.1). /dev/mem with O_SYNC is uncached; a
     * regular file shared with an emulated guest has no cache in between: nothing to compare. */
    if (g_sessions && (flags & FLAG_CACHEABLE) && strncmp(g_path, "/dev/mem", 8) == 0)
        die("memory attributes differ: the guest maps the region Normal write-back cacheable "
            "(flags bit 0) but this peer maps /dev/mem uncached (O_SYNC) (1.1)");

    rx->g.data_offset = doff[0];
    rx->g.size = dbytes[0];
    rx->g.mask = dbytes[0] - 1u;
    rx->g.max_msg = dbytes[0] / 2u - 8u;
    rx->off_producer = OFF_RING0_PRODUCER;
    rx->off_consumer = OFF_RING0_CONSUMER;
    tx->g.data_offset = doff[1];
    tx->g.size = dbytes[1];
    tx->g.mask = dbytes[1] - 1u;
    tx->g.max_msg = dbytes[1] / 2u - 8u;
    tx->off_producer = OFF_RING1_PRODUCER;
    tx->off_consumer = OFF_RING1_CONSUMER;

    /* 3. Wait for guest_state == Ready (bounded). */
    waiter_init(&w, WAIT_SECONDS);
    for (;;) {
        uint32_t s = read_guest_state();
        if (s == STATE_READY)
            break;
        if (s == STATE_STOPPED)
            die("guest_state is Stopped at attach: the guest will not serve the rings (5)");
        if (!waiter_idle(&w))
            die("timed out after %.0f s waiting for guest_state Ready (5, attach step 3)",
                WAIT_SECONDS);
    }

    if (g_sessions) {
        attach_session(rx, tx);
        return;
    }

    /* 4. (1.0 guest) Take the indices of our rings as starting positions (4.3), FULL, Ready. */
    fprintf(stderr, "%s: the guest speaks 1.%" PRIu32 " without sessions: a killed previous "
            "peer's messages may reach this run (9)\n", g_prog, minor);
    uint32_t p0 = load32(OFF_RING0_PRODUCER);
    uint32_t c0 = load32(OFF_RING0_CONSUMER);
    uint32_t p1 = load32(OFF_RING1_PRODUCER);
    uint32_t c1 = load32(OFF_RING1_CONSUMER);
    BARRIER_ACQUIRE();
    if (p0 % 8u || c0 % 8u || (uint32_t)(p0 - c0) > rx->g.size)
        die("ring 0 start indices P=0x%" PRIx32 " C=0x%" PRIx32
            " violate P%%8==0, C%%8==0, P-C<=size (4.3)",
            p0, c0);
    if (p1 % 8u || c1 % 8u || (uint32_t)(p1 - c1) > tx->g.size)
        die("ring 1 start indices P=0x%" PRIx32 " C=0x%" PRIx32
            " violate P%%8==0, C%%8==0, P-C<=size (4.3)",
            p1, c1);
    rx->tail = rx->released = c0;
    rx->cached_p = p0;
    tx->head = tx->published = p1;
    tx->cached_c = c1;

    set_peer_state(STATE_READY);
    g_attached = true;
}

/* ------------------------------------------------------------------------------------------ */
/* Demo protocol (section 7)                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Build a message (24-byte header + payload) as little-endian 64-bit words. */
static uint32_t build_message(uint64_t *words, uint32_t op, uint64_t seq, const uint8_t *payload,
                              uint32_t plen)
{
    uint32_t len = MSG_HEADER_BYTES + plen;
    uint32_t nwords = (len + 7u) / 8u;
    uint32_t crc = crc32_buf(payload, plen);
    words[0] = (uint64_t)op | ((uint64_t)plen << 32);
    words[1] = seq;
    words[2] = (uint64_t)crc; /* reserved (high half) = 0 */
    for (uint32_t k = 3; k < nwords; k++) {
        uint64_t v = 0;
        for (uint32_t b = 0; b < 8; b++) {
            uint32_t i = (k - 3u) * 8u + b;
            if (i < plen)
                v |= (uint64_t)payload[i] << (8u * b);
        }
        words[k] = v;
    }
    return len;
}

/* Send one message, waiting (bounded) for room while watching the guest's state word. */
static void send_message(struct producer *tx, uint32_t op, uint64_t seq, const uint8_t *payload,
                         uint32_t plen)
{
    uint64_t words[MAX_WORDS];
    uint32_t len = build_message(words, op, seq, payload, plen);
    struct waiter w;
    waiter_init(&w, WAIT_SECONDS);
    while (prod_reserve(tx, len) == RESERVE_FULL) {
        if (read_guest_state() == STATE_STOPPED)
            die("ring 1 is full and the guest is Stopped: it will never drain it (5)");
        check_guest_alive("room in ring 1");
        if (!waiter_idle(&w))
            die("timed out after %.0f s waiting for room in ring 1", WAIT_SECONDS);
    }
    prod_write_commit(tx, words, len);
    prod_publish(tx);
}

/* A decoded message: header copied once, payload words loaded once. */
struct decoded {
    uint32_t op, payload_len, checksum, reserved;
    uint64_t seq;
    uint8_t payload[STATS_PAYLOAD > PING_PAYLOAD ? STATS_PAYLOAD : PING_PAYLOAD];
};

/* Wait (bounded) for the next message on ring 0 and decode it once; releases its record. */
static void recv_message(struct consumer *rx, struct decoded *d, const char *what)
{
    struct msg m;
    struct waiter w;
    waiter_init(&w, WAIT_SECONDS);
    for (;;) {
        if (cons_read(rx, &m))
            break;
        cons_publish(rx); /* hand back padding we skipped (4.2) */
        if (read_guest_state() == STATE_STOPPED) {
            /* The guest publishes before it sets Stopped (5): look once more, then give up. */
            if (cons_read(rx, &m))
                break;
            die("guest_state became Stopped while waiting for %s", what);
        }
        check_guest_alive(what);
        if (!waiter_idle(&w))
            die("timed out after %.0f s waiting for %s", WAIT_SECONDS, what);
    }

    if (m.len < MSG_HEADER_BYTES)
        die("%s: ring 0 message of %" PRIu32 " bytes is shorter than the 24-byte header (7)", what,
            m.len);
    /* Header: three words, loaded once. */
    uint64_t h0 = load64(m.payload_off);
    uint64_t h1 = load64(m.payload_off + 8u);
    uint64_t h2 = load64(m.payload_off + 16u);
    d->op = (uint32_t)h0;
    d->payload_len = (uint32_t)(h0 >> 32);
    d->seq = h1;
    d->checksum = (uint32_t)h2;
    d->reserved = (uint32_t)(h2 >> 32);
    if (d->payload_len != m.len - MSG_HEADER_BYTES)
        die("%s: payload_len %" PRIu32 " != record len %" PRIu32 " - 24 (7)", what,
            d->payload_len, m.len);
    if (d->reserved != 0)
        die("%s: message header reserved field is 0x%" PRIx32 ", not 0 (7)", what, d->reserved);
    if (d->payload_len > sizeof d->payload)
        die("%s: unexpected op %" PRIu32 " with a %" PRIu32 "-byte payload (7)", what, d->op,
            d->payload_len);
    /* Payload words, each loaded once; the last may extend into the record's padding (4.2). */
    for (uint32_t i = 0; i < d->payload_len; i += 8) {
        uint64_t v = load64(m.payload_off + MSG_HEADER_BYTES + i);
        for (uint32_t b = 0; b < 8u && i + b < d->payload_len; b++)
            d->payload[i + b] = (uint8_t)(v >> (8u * b));
    }
    cons_release(rx, &m);
    cons_publish(rx);
}

static const char *op_name(uint32_t op)
{
    switch (op) {
    case OP_ECHO_REQUEST: return "EchoRequest";
    case OP_ECHO_REPLY: return "EchoReply";
    case OP_DATA: return "Data";
    case OP_STREAM_REQUEST: return "StreamRequest";
    case OP_STOP: return "Stop";
    case OP_STATS: return "Stats";
    default: return "unknown";
    }
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return (a > UINT64_MAX - b) ? UINT64_MAX : a + b;
}

/* ------------------------------------------------------------------------------------------ */
/* main                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static uint64_t parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0); /* base 0: 0x hex, else decimal (or 0 octal) */
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        die("bad %s '%s'", what, s);
    return (uint64_t)v;
}

static void self_test(void)
{
    /* Section 7: crc32("123456789") = 0xCBF43926, crc32("") = 0. */
    if (crc32_buf((const uint8_t *)"123456789", 9) != 0xCBF43926u || crc32_buf(NULL, 0) != 0)
        die("internal: CRC-32 self-test failed");
    /* Section 8: pattern(1, 12) and its CRC 0xC4143665. */
    static const uint8_t ex[12] = {0xa8, 0x79, 0xa4, 0xe5, 0x71, 0x78,
                                   0x20, 0x75, 0x3b, 0x77, 0xfe, 0x4b};
    uint8_t p[12];
    pattern_fill(1, p, 12);
    if (memcmp(p, ex, 12) != 0 || crc32_buf(p, 12) != 0xC4143665u)
        die("internal: pattern self-test failed");
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s FILE OFFSET SIZE COUNT\n", argv[0]);
        return 2;
    }
    crc_init();
    self_test();

    const char *file = argv[1];
    g_path = file;
    uint64_t offset = parse_num(argv[2], "OFFSET");
    uint64_t size = parse_num(argv[3], "SIZE");
    uint64_t count = parse_num(argv[4], "COUNT");
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || offset % (uint64_t)page != 0)
        die("OFFSET 0x%" PRIx64 " is not page aligned (mmap needs it; the region base must be "
            "8-byte aligned, 1)",
            offset);
    if (size < HEADER_MIN)
        die("SIZE 0x%" PRIx64 " is smaller than the 0x180-byte header", size);

    int fd = open(file, O_RDWR | O_SYNC);
    if (fd < 0)
        die("open %s: %s", file, strerror(errno));
    void *map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
    if (map == MAP_FAILED)
        die("mmap %s at 0x%" PRIx64 "+0x%" PRIx64 ": %s", file, offset, size, strerror(errno));
    close(fd);
    g_base = (volatile uint8_t *)map;
    g_mapped = size;

    struct consumer rx;
    struct producer tx;
    memset(&rx, 0, sizeof rx);
    memset(&tx, 0, sizeof tx);
    attach(&rx, &tx);

    if (MSG_HEADER_BYTES + PING_PAYLOAD > tx.g.max_msg || MSG_HEADER_BYTES + PING_PAYLOAD > rx.g.max_msg)
        die("rings too small for a %u-byte EchoRequest (3.2)", MSG_HEADER_BYTES + PING_PAYLOAD);

    uint64_t sent = 0, received = 0, lost = 0, corrupted = 0;
    uint8_t payload[PING_PAYLOAD];
    struct decoded d;

    for (uint64_t seq = 0; seq < count; seq++) {
        pattern_fill(seq, payload, PING_PAYLOAD);
        uint32_t req_crc = crc32_buf(payload, PING_PAYLOAD);
        send_message(&tx, OP_ECHO_REQUEST, seq, payload, PING_PAYLOAD);
        sent++;

        recv_message(&rx, &d, "an EchoReply");
        if (d.op != OP_ECHO_REPLY)
            die("expected EchoReply (op 2) for seq %" PRIu64 ", got op %" PRIu32 " (%s) (7)", seq,
                d.op, op_name(d.op));
        received++;
        if (d.seq != seq) {
            /* Only one request is outstanding: any other seq is a reply to nothing we sent. */
            die("EchoReply seq %" PRIu64 " != the outstanding request's seq %" PRIu64 " (7)",
                d.seq, seq);
        }
        if (d.payload_len != PING_PAYLOAD) {
            corrupted++; /* the reply is not a copy of the request's payload */
            continue;
        }
        uint8_t expect[PING_PAYLOAD];
        pattern_fill(d.seq, expect, PING_PAYLOAD);
        bool bad = d.checksum != req_crc || crc32_buf(d.payload, d.payload_len) != d.checksum ||
                   memcmp(d.payload, expect, PING_PAYLOAD) != 0;
        if (bad)
            corrupted++;
    }

    /* Stop (empty payload, seq 0: first Stop of this run) and wait for Stats. */
    send_message(&tx, OP_STOP, 0, NULL, 0);
    recv_message(&rx, &d, "the guest's Stats reply");
    if (d.op != OP_STATS)
        die("expected Stats (op 6) after Stop, got op %" PRIu32 " (%s) (7)", d.op,
            op_name(d.op));
    if (d.payload_len != STATS_PAYLOAD)
        die("Stats payload is %" PRIu32 " bytes, not 40 (7)", d.payload_len);
    if (d.seq != 0)
        die("Stats seq is %" PRIu64 ", not 0 (7)", d.seq);
    if (crc32_buf(d.payload, STATS_PAYLOAD) != d.checksum)
        die("Stats checksum 0x%08" PRIx32 " does not match its payload's CRC-32 0x%08" PRIx32
            " (7)",
            d.checksum, crc32_buf(d.payload, STATS_PAYLOAD));
    uint64_t gs[5];
    for (int i = 0; i < 5; i++) {
        uint64_t v = 0;
        for (int b = 0; b < 8; b++)
            v |= (uint64_t)d.payload[8 * i + b] << (8 * b);
        gs[i] = v;
    }
    uint64_t g_received = gs[0], g_sent = gs[1], g_corrupted = gs[2], g_lost = gs[3],
             g_proto = gs[4];

    /* We will not touch the rings again: publish (done in recv_message), FULL, Stopped (5). */
    set_peer_state(STATE_STOPPED);

    /* The guest answers Stop with Stats, then sets Stopped (5, 7): check it, bounded. */
    struct waiter w;
    waiter_init(&w, 10.0);
    bool guest_stopped = false;
    for (;;) {
        if (read_guest_state() == STATE_STOPPED) {
            guest_stopped = true;
            break;
        }
        if (!waiter_idle(&w))
            break;
    }

    lost = sat_add(lost, sent - received);
    printf("c-peer: sent=%" PRIu64 " received=%" PRIu64 " lost=%" PRIu64 " corrupted=%" PRIu64
           " guest_received=%" PRIu64 " guest_sent=%" PRIu64 " guest_lost=%" PRIu64
           " guest_corrupted=%" PRIu64 " guest_protocol_errors=%" PRIu64 "\n",
           sent, received, lost, corrupted, g_received, g_sent, g_lost, g_corrupted, g_proto);
    fflush(stdout);

    if (!guest_stopped)
        die("guest_state did not become Stopped within 10 s after its Stats reply (5/7)");

    /* The guest's counters cover at least this run: our requests + Stop received, our replies
     * sent (they may be larger if an earlier peer used the same guest). */
    bool ok = lost == 0 && corrupted == 0 && received == count && g_lost == 0 &&
              g_corrupted == 0 && g_proto == 0 && g_received >= sent + 1 && g_sent >= received;
    munmap(map, (size_t)size);
    return ok ? 0 : 1;
}
