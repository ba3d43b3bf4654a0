/* geofence's native request path: the same answers as the Python reference, at a fraction of the cost.
 *
 * Three pieces, each a fast path that answers only the common, unambiguous case and returns None for
 * everything else, so that the Python reference decides it (and words every error):
 *   request_key()     the one pass over the headers (geofence/request/facts.py);
 *   Trees.locate()    the MaxMind search-tree walk, keyed by the record's data offset
 *                     (geofence/geoip/locator.py: the Python reader decodes each distinct record once);
 *   Trees.resolve()   the client address (peer, or the X-Forwarded-For walk through trusted proxies,
 *                     geofence/network/client_ip.py) and its location, in one call.
 * tests/test_native.py holds every answer here to the reference's, on the suite's cases and a random corpus.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

#define V4_BASE (((u128)0xFFFF) << 32)
#define V4_MAX (V4_BASE | 0xFFFFFFFFu)

static PyObject *no_headers;   /* the reference's shared empty mapping */
static PyObject *refused;      /* geofence.request.facts.Refused */
static PyObject *reference_key; /* geofence.request.facts.reference_request_key */
static PyObject *str_headers, *str_client, *str_path, *str_root_path, *str_method, *str_websocket, *str_empty;

/* ---------------------------------------------------------------------------------------------------------- */
/* keys: Python int <-> u128                                                                                  */

static PyObject *key_to_long(u128 key) {
    if ((key >> 64) == 0) return PyLong_FromUnsignedLongLong((unsigned long long)key);
    unsigned char bytes[16];
    for (int i = 0; i < 16; i++) bytes[15 - i] = (unsigned char)(key >> (8 * i));
    return _PyLong_FromByteArray(bytes, 16, 0, 0);
}

static int long_to_key(PyObject *value, u128 *key) {
    if (!PyLong_Check(value)) { PyErr_SetString(PyExc_TypeError, "a key must be an int"); return -1; }
    unsigned char bytes[16];
#if PY_VERSION_HEX >= 0x030D0000  /* 3.13 added with_exceptions */
    if (_PyLong_AsByteArray((PyLongObject *)value, bytes, 16, 0, 0, 1) < 0) return -1;
#else
    if (_PyLong_AsByteArray((PyLongObject *)value, bytes, 16, 0, 0) < 0) return -1;
#endif
    u128 k = 0;
    for (int i = 0; i < 16; i++) k = (k << 8) | bytes[i];
    *key = k;
    return 0;
}

/* An inclusive key range list, sorted or not: a handful of entries, scanned like ProxyConfig.is_trusted. */
typedef struct { Py_ssize_t n; u128 *first, *last; } Ranges;

static int ranges_from(PyObject *seq, Ranges *out) {
    PyObject *fast = PySequence_Fast(seq, "ranges must be a sequence of (first, last)");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    out->n = n;
    out->first = PyMem_Calloc(n ? n : 1, sizeof(u128));
    out->last = PyMem_Calloc(n ? n : 1, sizeof(u128));
    if (out->first == NULL || out->last == NULL) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) < 2) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_TypeError, "a range must be a tuple (first, last, ...)");
            return -1;
        }
        if (long_to_key(PyTuple_GET_ITEM(pair, 0), &out->first[i]) < 0 ||
            long_to_key(PyTuple_GET_ITEM(pair, 1), &out->last[i]) < 0) { Py_DECREF(fast); return -1; }
    }
    Py_DECREF(fast);
    return 0;
}

static void ranges_free(Ranges *r) { PyMem_Free(r->first); PyMem_Free(r->last); r->first = r->last = NULL; r->n = 0; }

static int in_ranges(const Ranges *r, u128 key) {
    for (Py_ssize_t i = 0; i < r->n; i++)
        if (r->first[i] <= key && key <= r->last[i]) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* addresses (geofence/network/addresses.py: address_key)                                                    */

/* The key of address text: inet_pton as the reference calls it, then 6to4 / NAT64 unwrapped. 0 on success;
 * -1 when the text is not a plain address here (the reference then decides, and may still accept it). */
static int parse_key(const char *text, Py_ssize_t len, u128 *key) {
    char buf[64];
    if (len <= 0 || len >= (Py_ssize_t)sizeof(buf)) return -1;
    int colon = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == ':') colon = 1;
        else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.')) return -1;
    }
    memcpy(buf, text, len);
    buf[len] = 0;
    if (!colon) {
        unsigned char v4[4];
        if (inet_pton(AF_INET, buf, v4) != 1) return -1;
        *key = V4_BASE | ((u128)v4[0] << 24) | ((u128)v4[1] << 16) | ((u128)v4[2] << 8) | v4[3];
        return 0;
    }
    unsigned char v6[16];
    if (inet_pton(AF_INET6, buf, v6) != 1) return -1;
    u128 k = 0;
    for (int i = 0; i < 16; i++) k = (k << 8) | v6[i];
    if ((k >> 112) == 0x2002) k = V4_BASE | ((k >> 80) & 0xFFFFFFFFu);
    else if ((k >> 32) == (((u128)0x64FF9B) << 64)) k = V4_BASE | (k & 0xFFFFFFFFu);
    *key = k;
    return 0;
}

/* CIDR text of the network of *prefix* bits holding *key* (addresses.format_network). */
static PyObject *format_network(u128 key, int prefix) {
    char text[INET6_ADDRSTRLEN + 8];
    if (prefix >= 96 && key >= V4_BASE && key <= V4_MAX) {
        int bits = prefix - 96;
        uint32_t v4 = (uint32_t)key, mask = bits ? (uint32_t)(0xFFFFFFFFu << (32 - bits)) : 0;
        v4 &= mask;
        unsigned char b[4] = {(unsigned char)(v4 >> 24), (unsigned char)(v4 >> 16), (unsigned char)(v4 >> 8),
                              (unsigned char)v4};
        if (inet_ntop(AF_INET, b, text, sizeof(text)) == NULL) return NULL;
        size_t n = strlen(text);
        snprintf(text + n, sizeof(text) - n, "/%d", bits);
        return PyUnicode_FromString(text);
    }
    u128 start = prefix == 0 ? 0 : key & ~((prefix >= 128 ? (u128)0 : (((u128)1 << (128 - prefix)) - 1)));
    unsigned char b[16];
    for (int i = 0; i < 16; i++) b[15 - i] = (unsigned char)(start >> (8 * i));
    if (inet_ntop(AF_INET6, b, text, sizeof(text)) == NULL) return NULL;
    size_t n = strlen(text);
    snprintf(text + n, sizeof(text) - n, "/%d", prefix);
    return PyUnicode_FromString(text);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* request_key (geofence/request/facts.py)                                                                   */

/* One (name, value) header of request_key's pass (exact bytes): collected into *forwarding if watched,
 * else read into *host if it is the Host. 0, or -1 with an error set. */
static int one_header(PyObject *pair, PyObject *watched, int needs_host, PyObject **forwarding, PyObject **host,
                      int *seen_host) {
    PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
    int hit = PySet_Contains(watched, name);
    if (hit < 0) return -1;
    if (hit) {
        if (*forwarding == NULL && (*forwarding = PyDict_New()) == NULL) return -1;
        PyObject *previous = PyDict_GetItemWithError(*forwarding, name);  /* exact bytes, ours alone */
        if (previous == NULL) return PyErr_Occurred() ? -1 : PyDict_SetItem(*forwarding, name, value);
        Py_ssize_t a = PyBytes_GET_SIZE(previous), b = PyBytes_GET_SIZE(value);
        PyObject *joined = PyBytes_FromStringAndSize(NULL, a + 1 + b);
        if (joined == NULL) return -1;
        char *out = PyBytes_AS_STRING(joined);
        memcpy(out, PyBytes_AS_STRING(previous), a);
        out[a] = ',';
        memcpy(out + a + 1, PyBytes_AS_STRING(value), b);
        int rc = PyDict_SetItem(*forwarding, name, joined);
        Py_DECREF(joined);
        return rc;
    }
    if (needs_host && PyBytes_GET_SIZE(name) == 4 && memcmp(PyBytes_AS_STRING(name), "host", 4) == 0) {
        if (*seen_host) {
            PyErr_SetString(refused, "the request has more than one Host header");
            return -1;
        }
        *seen_host = 1;
        *host = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL);
        if (*host == NULL) return -1;
    }
    return 0;
}

static PyObject *fast_key(PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) { PyErr_SetString(PyExc_TypeError, "request_key(scope, watched, needs_host, trusted_peer)"); return NULL; }
    PyObject *scope = args[0], *watched = args[1], *trusted_peer = args[3];
    int needs_host = PyObject_IsTrue(args[2]);
    /* Exact types only, here and below: a subclass may run Python code (a __hash__, a __getitem__) that the
     * reference runs its own way, or that changes the header list under this loop. */
    if (!PyDict_CheckExact(scope) || !PyFrozenSet_CheckExact(watched)) Py_RETURN_NONE;
    PyObject *headers = PyDict_GetItemWithError(scope, str_headers);
    if (headers == NULL || !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;  /* not a list: the reference iterates whatever it is */
    }
    PyObject *forwarding = NULL, *host = NULL, *result = NULL;
    int seen_host = 0;
    /* The list is re-read at each step (an allocation below may run a collection, and a finalizer could
     * change it), and each pair is held while its name and value are in use. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(headers); i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            Py_XDECREF(forwarding); Py_XDECREF(host);
            Py_RETURN_NONE;  /* lists, bytearrays, subclasses...: the reference's unpacking decides */
        }
        Py_INCREF(pair);
        int rc = one_header(pair, watched, needs_host, &forwarding, &host, &seen_host);
        Py_DECREF(pair);
        if (rc < 0) goto fail;
    }
    if (host == NULL) { host = str_empty; Py_INCREF(host); }
    if (needs_host && PyUnicode_GET_LENGTH(host) == 0) {
        PyErr_SetString(refused, "the request has no (or an empty) Host header, and the policy has host rules");
        goto fail;
    }
    PyObject *client = PyDict_GetItemWithError(scope, str_client);  /* borrowed */
    if (client == NULL && PyErr_Occurred()) goto fail;
    PyObject *peer;
    if (client == NULL || client == Py_None || !PyObject_IsTrue(client)) {
        peer = Py_None; Py_INCREF(peer);
    } else if ((peer = PySequence_GetItem(client, 0)) == NULL) goto fail;
    PyObject *path = PyDict_GetItemWithError(scope, str_path);
    if (path == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, str_path);
        Py_DECREF(peer);
        goto fail;
    }
    PyObject *root_path = PyDict_GetItemWithError(scope, str_root_path);
    if (root_path == NULL) { if (PyErr_Occurred()) { Py_DECREF(peer); goto fail; } root_path = str_empty; }
    PyObject *method = PyDict_GetItemWithError(scope, str_method);
    if (method == NULL && PyErr_Occurred()) { Py_DECREF(peer); goto fail; }
    if (method == NULL || method == Py_None || !PyObject_IsTrue(method)) method = str_websocket;
    if (!PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(path) || !PyUnicode_CheckExact(root_path)) {
        Py_DECREF(peer); Py_XDECREF(forwarding); Py_DECREF(host);
        Py_RETURN_NONE;  /* the reference's len() and key decide odd types */
    }
    Py_ssize_t size = PyUnicode_GET_LENGTH(method) + PyUnicode_GET_LENGTH(path) + PyUnicode_GET_LENGTH(host) +
                      PyUnicode_GET_LENGTH(root_path);
    if (forwarding == NULL) {
        PyObject *key = size > 2048 ? (Py_INCREF(Py_None), Py_None)
                                    : PyTuple_Pack(5, method, path, root_path, host, peer);
        if (key != NULL) result = PyTuple_Pack(3, key, host, no_headers);
        Py_XDECREF(key);
        Py_DECREF(peer); Py_DECREF(host);
        return result;
    }
    PyObject *header_key = NULL;
    if (PyDict_GET_SIZE(forwarding) == 1) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        PyDict_Next(forwarding, &pos, &k, &v);
        PyObject *item = PyTuple_Pack(2, k, v);
        if (item != NULL) { header_key = PyTuple_Pack(1, item); Py_DECREF(item); }
        size += PyBytes_GET_SIZE(v);
    } else {
        PyObject *list = PyDict_Items(forwarding);
        if (list != NULL && PyList_Sort(list) == 0) header_key = PyList_AsTuple(list);
        Py_XDECREF(list);
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(forwarding, &pos, &k, &v)) size += PyBytes_GET_SIZE(v);
    }
    if (header_key == NULL) { Py_DECREF(peer); goto fail; }
    int trusted = 0;
    if (size <= 2048) {
        PyObject *answer = PyObject_CallOneArg(trusted_peer, peer);
        if (answer == NULL) { Py_DECREF(header_key); Py_DECREF(peer); goto fail; }
        trusted = PyObject_IsTrue(answer);
        Py_DECREF(answer);
        if (trusted < 0) { Py_DECREF(header_key); Py_DECREF(peer); goto fail; }
    }
    PyObject *key = trusted ? PyTuple_Pack(6, method, path, root_path, host, peer, header_key)
                            : (Py_INCREF(Py_None), Py_None);
    if (key != NULL) result = PyTuple_Pack(3, key, host, forwarding);
    Py_XDECREF(key);
    Py_DECREF(header_key); Py_DECREF(peer); Py_DECREF(host); Py_DECREF(forwarding);
    return result;
fail:
    Py_XDECREF(forwarding);
    Py_XDECREF(host);
    return NULL;
}

/* request_key(...): the fast path, else the Python reference with the same arguments. */
static PyObject *request_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    /* The scope's values fast_key reads are held for its whole run: an allocation there may run a collection,
     * and a finalizer could replace them in the scope (fast_key then still reads the objects it began with). */
    PyObject *held[5] = {NULL, NULL, NULL, NULL, NULL};
    if (nargs >= 1 && PyDict_CheckExact(args[0])) {
        PyObject *names[5] = {str_headers, str_client, str_path, str_root_path, str_method};
        for (int i = 0; i < 5; i++) {
            held[i] = PyDict_GetItemWithError(args[0], names[i]);  /* exact str keys: no error, no Python code */
            Py_XINCREF(held[i]);
        }
    }
    PyObject *found = fast_key(args, nargs);
    for (int i = 0; i < 5; i++) Py_XDECREF(held[i]);
    if (found != Py_None || reference_key == NULL) return found;
    Py_DECREF(found);
    return PyObject_Vectorcall(reference_key, args, (size_t)nargs, NULL);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Trees: MaxMind-format search trees, walked here; records decoded by the Python reader once per offset.     */

typedef struct {
    Py_buffer view;
    const unsigned char *tree;
    uint32_t node_count, record_size, ip_version, has_ipv4;
    size_t data_size;
    uint32_t v4_start;  /* the node after 96 zero bits (IPv6 trees), as libmaxminddb keeps it */
    int v4_depth;
} Tree;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Tree *trees;
    PyObject *facts;   /* records key (offset, or tuple of offsets) -> facts id, learnt by the Locator */
    Ranges special;    /* special-purpose ranges: never answered here */
    Ranges trusted;    /* [proxies] trusted */
    PyObject *header;  /* b"x-forwarded-for" when that is [proxies] header, else None (no walk here) */
    Py_ssize_t max_header_bytes;
    Py_hash_t *doorkeeper;  /* request-key hashes by slot (see seen); allocated on first use */
} TreesObject;

#define DOORKEEPER_SLOTS (1 << 16)

static inline uint32_t record_at(const Tree *t, uint32_t node, int bit) {
    const unsigned char *p;
    switch (t->record_size) {
    case 24:
        p = t->tree + (size_t)node * 6 + (bit ? 3 : 0);
        return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
    case 28:
        p = t->tree + (size_t)node * 7;
        if (bit) return (((uint32_t)p[3] & 0x0F) << 24) | ((uint32_t)p[4] << 16) | ((uint32_t)p[5] << 8) | p[6];
        return (((uint32_t)p[3] & 0xF0) << 20) | ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
    default:
        p = t->tree + (size_t)node * 8 + (bit ? 4 : 0);
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
}

/* Walk *t* for *key*. 1: found a record at *offset* (-1: no record) with the reference's prefix in *prefix*
 * (128-bit space); 0: this database is not asked (family); -1: the tree is not what it claims (the Python
 * reader then reports the corruption). */
static int walk(const Tree *t, u128 key, int v4, long long *offset, int *prefix) {
    uint32_t node;
    int depth, bits;
    if (v4) {
        if (!t->has_ipv4) return 0;
        if (t->ip_version == 4) { node = 0; depth = 0; }
        else { node = t->v4_start; depth = t->v4_depth; }
        bits = 32;
    } else {
        if (t->ip_version == 4) return 0;
        node = 0; depth = 0; bits = 128;
    }
    int i = 0;
    while (node < t->node_count && i < bits) {
        node = record_at(t, node, (int)((key >> (bits - 1 - i)) & 1));
        i++;
    }
    if (node < t->node_count) return -1;
    int netmask = depth + i;
    if (node == t->node_count) *offset = -1;
    else {
        uint64_t off = (uint64_t)node - t->node_count - 16;
        if ((uint64_t)node - t->node_count < 16 || off >= t->data_size) return -1;
        *offset = (long long)off;
    }
    /* locator.py: length = max(reader prefix, 0) + 96 for IPv4, the reader giving IPv4's own prefix */
    if (v4) *prefix = t->ip_version == 4 ? netmask + 96 : (netmask >= 96 ? netmask : 96);
    else *prefix = netmask;
    return 1;
}

/* The records key and prefix of *key*, or NULL with no error set when the reference must answer. */
static PyObject *records_key(TreesObject *self, u128 key, int *prefix) {
    if (in_ranges(&self->special, key)) return NULL;
    int v4 = key >= V4_BASE && key <= V4_MAX;
    *prefix = 0;
    PyObject *parts = self->n == 1 ? NULL : PyTuple_New(self->n);
    if (self->n != 1 && parts == NULL) return NULL;
    PyObject *single = NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        long long offset = -2;
        int length = 0, rc = walk(&self->trees[i], key, v4, &offset, &length);
        if (rc < 0) { Py_XDECREF(parts); return NULL; }
        if (rc > 0 && length > *prefix) *prefix = length;
        PyObject *part = PyLong_FromLongLong(offset);  /* -2: not asked, -1: no record */
        if (part == NULL) { Py_XDECREF(parts); return NULL; }
        if (parts == NULL) single = part;
        else PyTuple_SET_ITEM(parts, i, part);
    }
    return parts == NULL ? single : parts;
}

/* (network, facts id) of *key* from what the Locator has learnt, or None (a new record, a special range). */
static PyObject *locate_key(TreesObject *self, u128 key) {
    int prefix;
    PyObject *records = records_key(self, key, &prefix);
    if (records == NULL) { if (PyErr_Occurred()) return NULL; Py_RETURN_NONE; }
    PyObject *facts_id = PyDict_GetItemWithError(self->facts, records);
    Py_DECREF(records);
    if (facts_id == NULL) { if (PyErr_Occurred()) return NULL; Py_RETURN_NONE; }
    PyObject *network = format_network(key, prefix);
    if (network == NULL) return NULL;
    PyObject *result = PyTuple_Pack(2, network, facts_id);
    Py_DECREF(network);
    return result;
}

/* An address key from the caller, or 0 (no error set) for anything else: the reference then refuses it. */
static int given_key(PyObject *arg, u128 *key) {
    if (!PyLong_CheckExact(arg)) return 0;
    if (long_to_key(arg, key) < 0) { PyErr_Clear(); return 0; }  /* negative, or past 128 bits */
    return 1;
}

static PyObject *Trees_locate(TreesObject *self, PyObject *arg) {
    u128 key;
    if (!given_key(arg, &key)) Py_RETURN_NONE;
    return locate_key(self, key);
}

static PyObject *Trees_records(TreesObject *self, PyObject *arg) {
    u128 key;
    int prefix;
    if (!given_key(arg, &key)) Py_RETURN_NONE;
    PyObject *records = records_key(self, key, &prefix);
    if (records == NULL) { if (PyErr_Occurred()) return NULL; Py_RETURN_NONE; }
    return records;
}

static const char *as_text(PyObject *s, Py_ssize_t *len) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) return NULL;  /* the reference: type(s) is str */
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_DATA(s);
}

/* The client a trusted proxy names in X-Forwarded-For (client_ip._walk), or 0 when the reference must
 * answer: anything but plain addresses (and IPv4:port) separated by commas and spaces. */
static int walk_xff(TreesObject *self, const char *value, Py_ssize_t len, u128 *key, Py_ssize_t *node_at,
                    Py_ssize_t *node_len) {
    Py_ssize_t end = len;
    int found = 0;
    while (end > 0) {
        Py_ssize_t start = end;
        while (start > 0 && value[start - 1] != ',') start--;
        Py_ssize_t a = start, b = end;
        while (a < b && (value[a] == ' ' || value[a] == '\t')) a++;
        while (b > a && (value[b - 1] == ' ' || value[b - 1] == '\t')) b--;
        end = start > 0 ? start - 1 : 0;
        if (a == b) {
            if (start == 0) break;
            continue;  /* empty elements are dropped */
        }
        Py_ssize_t host_len = b - a;
        int colons = 0;
        Py_ssize_t colon_at = -1;
        for (Py_ssize_t i = a; i < b; i++) {
            unsigned char c = (unsigned char)value[i];
            if (c == ':') { colons++; if (colon_at < 0) colon_at = i; }
            else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.'))
                return 0;  /* brackets, "unknown", obfuscated nodes, whitespace other than space/tab... */
        }
        if (colons == 1) {
            Py_ssize_t digits = b - colon_at - 1;
            if (digits < 1 || digits > 5) return 0;
            for (Py_ssize_t i = colon_at + 1; i < b; i++) if (value[i] < '0' || value[i] > '9') return 0;
            host_len = colon_at - a;
        }
        u128 k;
        if (parse_key(value + a, host_len, &k) < 0) return 0;
        *key = k; *node_at = a; *node_len = b - a;
        found = 1;
        if (!in_ranges(&self->trusted, k)) return 1;
        if (start == 0) break;
    }
    return found;  /* every hop a trusted proxy: the leftmost started it */
}

/* resolve(peer, forwarding) -> (network, facts id, client key, client text) or None: the client address and
 * its location in one call, for the cases the reference would answer without a problem. */
static PyObject *Trees_resolve(TreesObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "resolve(peer, forwarding)"); return NULL; }
    PyObject *peer = args[0], *forwarding = args[1];
    Py_ssize_t len;
    const char *text = peer == Py_None ? NULL : as_text(peer, &len);
    u128 key;
    if (text == NULL || memchr(text, '%', len) != NULL || parse_key(text, len, &key) < 0) Py_RETURN_NONE;
    Py_ssize_t forwarded = PyDict_CheckExact(forwarding) ? PyDict_GET_SIZE(forwarding) : -1;
    if (forwarded < 0) Py_RETURN_NONE;
    PyObject *client_text = peer;
    Py_INCREF(client_text);
    if (in_ranges(&self->trusted, key)) {
        PyObject *value = self->header == Py_None ? NULL : PyDict_GetItemWithError(forwarding, self->header);
        if (value == NULL || !PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) > self->max_header_bytes) {
            Py_DECREF(client_text);
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;  /* no header, another header, too long: the reference words the broken chain */
        }
        Py_ssize_t at, n;
        if (!walk_xff(self, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &key, &at, &n)) {
            Py_DECREF(client_text);
            Py_RETURN_NONE;
        }
        Py_DECREF(client_text);
        client_text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value) + at, n, NULL);
        if (client_text == NULL) return NULL;
    } else if (forwarded > 0) {
        Py_DECREF(client_text);
        Py_RETURN_NONE;  /* an untrusted peer with forwarding headers: the reference checks for a server rewrite */
    }
    PyObject *located = locate_key(self, key);
    if (located == NULL || located == Py_None) { Py_DECREF(client_text); return located; }
    PyObject *key_obj = key_to_long(key);
    PyObject *result = key_obj == NULL ? NULL
        : PyTuple_Pack(4, PyTuple_GET_ITEM(located, 0), PyTuple_GET_ITEM(located, 1), key_obj, client_text);
    Py_XDECREF(key_obj);
    Py_DECREF(located);
    Py_DECREF(client_text);
    return result;
}

/* seen(key): whether request *key* came before (its hash is in its slot), remembering it. The native path
 * keeps no client cache to tell a known client by, and the front cache admits known ones only: a fixed
 * array of machine integers, so nothing grows with clients and the garbage collector has nothing to walk. */
static PyObject *Trees_seen(TreesObject *self, PyObject *key) {
    Py_hash_t digest = PyObject_Hash(key);
    if (digest == -1) return NULL;
    if (self->doorkeeper == NULL && (self->doorkeeper = PyMem_Calloc(DOORKEEPER_SLOTS, sizeof(Py_hash_t))) == NULL)
        return PyErr_NoMemory();
    Py_hash_t *slot = &self->doorkeeper[(size_t)digest & (DOORKEEPER_SLOTS - 1)];
    if (*slot == digest) Py_RETURN_TRUE;
    *slot = digest;
    Py_RETURN_FALSE;
}

static void Trees_dealloc(TreesObject *self) {
    PyMem_Free(self->doorkeeper);
    for (Py_ssize_t i = 0; i < self->n; i++)
        if (self->trees[i].view.obj != NULL) PyBuffer_Release(&self->trees[i].view);
    PyMem_Free(self->trees);
    ranges_free(&self->special);
    ranges_free(&self->trusted);
    Py_XDECREF(self->facts);
    Py_XDECREF(self->header);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Trees(databases, facts, special, trusted, header, max_header_bytes); databases: a sequence of
 * (buffer, node_count, record_size, ip_version, has_ipv4), highest priority first. */
static PyObject *Trees_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *dbs, *facts, *special, *trusted, *header;
    Py_ssize_t max_header_bytes;
    if (!PyArg_ParseTuple(args, "OO!OOOn", &dbs, &PyDict_Type, &facts, &special, &trusted, &header,
                          &max_header_bytes))
        return NULL;
    TreesObject *self = (TreesObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(facts); self->facts = facts;
    Py_INCREF(header); self->header = header;
    self->max_header_bytes = max_header_bytes;
    if (header != Py_None && !PyBytes_Check(header)) { PyErr_SetString(PyExc_TypeError, "header: bytes or None"); goto fail; }
    if (ranges_from(special, &self->special) < 0 || ranges_from(trusted, &self->trusted) < 0) goto fail;
    PyObject *fast = PySequence_Fast(dbs, "databases must be a sequence");
    if (fast == NULL) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    self->trees = PyMem_Calloc(n ? n : 1, sizeof(Tree));
    if (self->trees == NULL) { Py_DECREF(fast); PyErr_NoMemory(); goto fail; }
    self->n = n;  /* only now: the deallocator walks n trees */
    for (Py_ssize_t i = 0; i < n; i++) {
        Tree *t = &self->trees[i];
        PyObject *buffer;
        Py_ssize_t node_count, record_size, ip_version;  /* range-checked below, not truncated */
        int has_ipv4;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "Onnnp", &buffer, &node_count, &record_size,
                              &ip_version, &has_ipv4) ||
            PyObject_GetBuffer(buffer, &t->view, PyBUF_SIMPLE) < 0) { Py_DECREF(fast); goto fail; }
        size_t tree_size = node_count > 0 && node_count < ((Py_ssize_t)1 << 32) && record_size > 0
                               ? (size_t)record_size * 2 / 8 * (size_t)node_count : (size_t)-1;
        if ((record_size != 24 && record_size != 28 && record_size != 32) || (ip_version != 4 && ip_version != 6) ||
            tree_size == (size_t)-1 || tree_size + 16 > (size_t)t->view.len) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "not a MaxMind search tree of that shape");
            goto fail;
        }
        t->tree = t->view.buf;
        t->node_count = (uint32_t)node_count; t->record_size = (uint32_t)record_size;
        t->ip_version = (uint32_t)ip_version;
        t->has_ipv4 = (uint32_t)has_ipv4;
        t->data_size = (size_t)t->view.len - tree_size - 16;
        uint32_t node = 0;
        int depth = 0;
        if (ip_version == 6)
            while (depth < 96 && node < t->node_count) { node = record_at(t, node, 0); depth++; }
        t->v4_start = node; t->v4_depth = depth;
    }
    Py_DECREF(fast);
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyMethodDef Trees_methods[] = {
    {"locate", (PyCFunction)Trees_locate, METH_O, "(network, facts id) of an address key, or None."},
    {"records", (PyCFunction)Trees_records, METH_O, "The records key of an address key (what facts are learnt by)."},
    {"resolve", (PyCFunction)(void (*)(void))Trees_resolve, METH_FASTCALL,
     "(network, facts id, key, text) of a request's client, or None."},
    {"seen", (PyCFunction)Trees_seen, METH_O, "Whether a request key came before (remembering it)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TreesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geofence.native._core.Trees",
    .tp_basicsize = sizeof(TreesObject),
    .tp_dealloc = (destructor)Trees_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MaxMind search trees and trusted proxies, for the request path.",
    .tp_methods = Trees_methods,
    .tp_new = Trees_new,
};

/* ---------------------------------------------------------------------------------------------------------- */

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *empty, *exc, *reference;
    if (!PyArg_ParseTuple(args, "O!OO", &PyDict_Type, &empty, &exc, &reference)) return NULL;
    Py_INCREF(empty); Py_XSETREF(no_headers, empty);
    Py_INCREF(exc); Py_XSETREF(refused, exc);
    Py_INCREF(reference); Py_XSETREF(reference_key, reference);
    Py_RETURN_NONE;
}

/* strncasecmp for ASCII only, whatever the locale (bytes.lower() is ASCII-only too; a Turkish locale's
 * tolower('I') is not 'i'). */
static int ascii_equal_nocase(const char *a, const char *lower, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[i]) return 0;
    }
    return 1;
}

/* authorization(headers): the value of the request's one Authorization header when it is a plain bearer
 * value ("bearer " in any case, nothing after the token), else None: none, several, or anything odd, which
 * the Python token reader then answers (or refuses). The same object the server gave: a cache key. */
static PyObject *authorization(PyObject *module, PyObject *headers) {
    if (!(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) Py_RETURN_NONE;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);  /* nothing below runs Python code or allocates */
    PyObject **items = PySequence_Fast_ITEMS(headers), *found = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)))
            Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(pair, 0);
        if (PyBytes_GET_SIZE(name) != 13 || memcmp(PyBytes_AS_STRING(name), "authorization", 13) != 0) continue;
        if (found != NULL) Py_RETURN_NONE;
        found = PyTuple_GET_ITEM(pair, 1);
    }
    if (found == NULL || !PyBytes_CheckExact(found)) Py_RETURN_NONE;
    const char *v = PyBytes_AS_STRING(found);
    Py_ssize_t len = PyBytes_GET_SIZE(found);
    if (len < 8 || !ascii_equal_nocase(v, "bearer ", 7)) Py_RETURN_NONE;
    for (Py_ssize_t i = 7; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c >= 0x7f) Py_RETURN_NONE;  /* spaces, controls, latin-1: the token reader decides */
    }
    Py_INCREF(found);
    return found;
}

/* private_send(reference, send): a callable like functools.partial(reference, send) for
 * geofence/asgi/plumbing.py's _send_private (the reference), which marks a response Cache-Control: private.
 * It answers the plain case itself: a dict message whose headers are a list or tuple of (bytes, bytes) pairs
 * naming no cache header; it appends ("cache-control", "private") to a new list, as the reference does, then
 * returns send(message). Anything else (a cache header to rewrite, odd types) goes to the reference. */
typedef struct {
    PyObject_HEAD
    PyObject *reference, *send;
    vectorcallfunc vectorcall;
} PrivateSendObject;

static PyObject *str_type, *str_start, *private_header;

/* Whether *name* (lower-cased) is a header a shared cache obeys: plumbing._CACHE_HEADERS. */
static int cache_header(const char *name, Py_ssize_t len) {
    static const char *const names[] = {"cache-control", "cdn-cache-control", "cloudflare-cdn-cache-control",
                                        "surrogate-control", "x-accel-expires", "edge-control"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((Py_ssize_t)strlen(names[i]) == len && ascii_equal_nocase(name, names[i], (size_t)len)) return 1;
    return 0;
}

/* 1: marked in place; 0: not a response start (send it as it is); -1: the reference must answer. */
/* mark_private's work on *headers* (held by the caller: an allocation below may run a finalizer that changes
 * the message). */
static int mark_headers(PyObject *message, PyObject *headers) {
    Py_ssize_t n = 0;
    if (headers != Py_None) {
        if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)) return -1;
        n = PySequence_Fast_GET_SIZE(headers);
    }
    for (Py_ssize_t i = 0; i < n; i++) {  /* runs no Python code and allocates nothing */
        PyObject *pair = PySequence_Fast_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) return -1;
        PyObject *name = PyTuple_GET_ITEM(pair, 0);
        if (!PyBytes_CheckExact(name)) return -1;
        if (cache_header(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))) return -1;
    }
    /* A copy taken in one step, then the mark. */
    PyObject *marked = n == 0 ? PyList_New(0) : PySequence_List(headers);
    if (marked == NULL) return -1;
    if (PyList_Append(marked, private_header) < 0) { Py_DECREF(marked); return -1; }
    int rc = PyDict_SetItem(message, str_headers, marked);
    Py_DECREF(marked);
    return rc < 0 ? -1 : 1;
}

/* 1: marked in place; 0: not a response start (send it as it is); -1: the reference must answer. */
static int mark_private(PyObject *message) {
    if (!PyDict_CheckExact(message)) return -1;
    PyObject *type = PyDict_GetItemWithError(message, str_type);
    if (type == NULL) return -1;  /* the reference raises KeyError (or passes on the error) */
    if (!PyUnicode_CheckExact(type)) return -1;
    int start = PyUnicode_Compare(type, str_start);  /* exact str: no Python code */
    if (start == -1 && PyErr_Occurred()) return -1;
    if (start != 0) return 0;
    PyObject *headers = PyDict_GetItemWithError(message, str_headers);
    if (headers == NULL && PyErr_Occurred()) return -1;
    if (headers == NULL) headers = Py_None;
    Py_INCREF(headers);
    int rc = mark_headers(message, headers);
    Py_DECREF(headers);
    return rc;
}

static PyObject *PrivateSend_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kw) {
    PrivateSendObject *self = (PrivateSendObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 1 && kw == NULL) {
        PyObject *message = args[0];
        Py_INCREF(message);
        int rc = mark_private(message);
        PyObject *result = rc >= 0 ? PyObject_CallOneArg(self->send, message) : NULL;
        Py_DECREF(message);
        if (rc >= 0) return result;
        if (PyErr_Occurred()) PyErr_Clear();  /* the reference meets the same input and words the error */
    }
    /* Anything else goes to the reference as a partial would pass it: send first, then the positional
     * arguments, then the keyword values (*kw* is the tuple of their names). */
    Py_ssize_t nkw = kw == NULL ? 0 : PyTuple_GET_SIZE(kw);
    PyObject **all = PyMem_Malloc((size_t)(1 + nargs + nkw) * sizeof(PyObject *));
    if (all == NULL) return PyErr_NoMemory();
    all[0] = self->send;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) all[i + 1] = args[i];
    PyObject *result = PyObject_Vectorcall(self->reference, all, (size_t)(nargs + 1), kw);
    PyMem_Free(all);
    return result;
}

static int PrivateSend_traverse(PrivateSendObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->reference);
    Py_VISIT(self->send);
    return 0;
}

static int PrivateSend_clear(PrivateSendObject *self) {
    Py_CLEAR(self->reference);
    Py_CLEAR(self->send);
    return 0;
}

static void PrivateSend_dealloc(PrivateSendObject *self) {
    PyObject_GC_UnTrack(self);
    PrivateSend_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject PrivateSendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "geofence.native._core.PrivateSend",
    .tp_basicsize = sizeof(PrivateSendObject),
    .tp_dealloc = (destructor)PrivateSend_dealloc,
    .tp_vectorcall_offset = offsetof(PrivateSendObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_traverse = (traverseproc)PrivateSend_traverse,
    .tp_clear = (inquiry)PrivateSend_clear,
    .tp_doc = "send, marking the response Cache-Control: private (plumbing._send_private's fast path).",
};

static PyObject *private_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "private_send(reference, send)"); return NULL; }
    PrivateSendObject *self = PyObject_GC_New(PrivateSendObject, &PrivateSendType);
    if (self == NULL) return NULL;
    Py_INCREF(args[0]); self->reference = args[0];
    Py_INCREF(args[1]); self->send = args[1];
    self->vectorcall = PrivateSend_vectorcall;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *py_format_network(PyObject *module, PyObject *args) {
    PyObject *key_obj;
    int prefix;
    u128 key;
    if (!PyArg_ParseTuple(args, "Oi", &key_obj, &prefix) || long_to_key(key_obj, &key) < 0) return NULL;
    if (prefix < 0 || prefix > 128) { PyErr_SetString(PyExc_ValueError, "prefix out of range"); return NULL; }
    return format_network(key, prefix);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(no_headers, Refused, reference_request_key): the reference's objects."},
    {"request_key", (PyCFunction)(void (*)(void))request_key, METH_FASTCALL,
     "request_key(scope, watched, needs_host, trusted_peer): as geofence.request.facts."},
    {"format_network", py_format_network, METH_VARARGS, "CIDR text of the network of prefix bits holding key."},
    {"authorization", authorization, METH_O, "The one plain bearer Authorization value of a header list, or None."},
    {"private_send", (PyCFunction)(void (*)(void))private_send, METH_FASTCALL,
     "private_send(reference, send): send, marking a response private (as partial(reference, send))."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, .m_name = "_core", .m_doc = "geofence's native request path.", .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&TreesType) < 0 || PyType_Ready(&PrivateSendType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    str_headers = PyUnicode_InternFromString("headers");
    str_client = PyUnicode_InternFromString("client");
    str_path = PyUnicode_InternFromString("path");
    str_root_path = PyUnicode_InternFromString("root_path");
    str_method = PyUnicode_InternFromString("method");
    str_websocket = PyUnicode_InternFromString("WEBSOCKET");
    str_empty = PyUnicode_InternFromString("");
    str_type = PyUnicode_InternFromString("type");
    str_start = PyUnicode_InternFromString("http.response.start");
    private_header = Py_BuildValue("(y#y#)", "cache-control", (Py_ssize_t)13, "private", (Py_ssize_t)7);
    if (private_header == NULL) return NULL;
    no_headers = PyDict_New();
    refused = PyExc_ValueError; Py_INCREF(refused);
    Py_INCREF(&TreesType);
    if (PyModule_AddObject(m, "Trees", (PyObject *)&TreesType) < 0) return NULL;
    return m;
}
