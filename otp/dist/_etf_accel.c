/* The C accelerator of otp/dist/_etf.py: the External Term Format codec's hot path.
 *
 * It gives byte-identical output and the same decoded values (same types all the way
 * down) as the Python functions of _etf.py, which stay the reference: the common
 * classes and tags are handled here (ImproperList and exceptions too), everything else
 * (an exception's parts, exceptions for BEAM, Fun, Port, BitBinary, the first record of
 * a registered class, legacy tags, non-canonical improper lists, error messages that
 * need Python's formatting of a value) is handed back to the Python code of _etf.py.
 *
 * _etf.py calls setup(globals()) once: the classes, caches and helpers are taken from
 * its namespace by name (the dicts are shared, never copied: a registry change seen by
 * the Python code is seen here).
 *
 * Decoding never trusts the input: every read is bounds-checked against the length,
 * a length is checked against the bytes left before anything is allocated for it, and
 * nesting is limited (MAX_DEPTH). Truncation raises IndexError internally, turned into
 * BadTerm at the top exactly as the Python decode() does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <string.h>

#define NEW_FLOAT 70
#define NEW_PID 88
#define NEWER_REFERENCE 90
#define SMALL_INTEGER 97
#define INTEGER 98
#define ATOM 100
#define SMALL_TUPLE 104
#define LARGE_TUPLE 105
#define NIL 106
#define STRING 107
#define LIST 108
#define BINARY 109
#define SMALL_BIG 110
#define LARGE_BIG 111
#define NEW_REFERENCE 114
#define SMALL_ATOM 115
#define MAP 116
#define ATOM_UTF8 118
#define SMALL_ATOM_UTF8 119

#define MAX_CACHE 65536
/* Nesting limit of both directions. The Python codec stops at the interpreter's
 * recursion limit (a few hundred levels); this one at MAX_DEPTH. */
#define MAX_DEPTH 1000

/* --- what setup() takes from _etf.py ------------------------------------------------ */

static PyTypeObject *Atom_T, *Pid_T, *Ref_T, *ImproperList_T;
static PyObject *NotSendable, *BadTerm, *StructError;
static PyObject *ATOM_BYTES, *PID_HEADS, *CREATIONS, *ATOMS, *LATIN1_ATOMS, *PIDS,
    *RECORD_DEC, *RESERVED, *RECORD_SPECS, *RECORD_CLASSES;
static PyObject *f_atom_bytes, *f_pid_head, *f_enc_one, *f_sorted_items, *f_dec_one,
    *f_improper, *f_map_struct, *f_py_decode, *f_py_encode, *f_dec_record,
    *f_dec_bytes_record, *f_exc_parts;
static PyObject *TRUE_B, *FALSE_B, *NIL_B, *BYTES_HEAD, *EXC_TAG;
static PyObject *s_steps, *s_struct, *s_items, *s_tail, *EMPTY_TUPLE;
static PyObject *SMALL_INTS[256];
/* The slots of Pid (node, id, creation) and Ref (node, id, owner), read and written
 * directly (Pid.__init__ and Ref.__init__ only store their arguments). */
static Py_ssize_t pid_node_off, pid_id_off, pid_creation_off;
static Py_ssize_t ref_node_off, ref_id_off, ref_owner_off;
static int ready;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* === encoding ========================================================================= */

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
    int otpy;
    PyObject *otpy_obj;
    unsigned char small[1024];
} Enc;

static int grow(Enc *e, Py_ssize_t need) {
    Py_ssize_t cap = e->cap;
    while (cap - e->len < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    unsigned char *nb;
    if (e->buf == e->small) {
        nb = PyMem_Malloc(cap);
        if (nb) memcpy(nb, e->buf, e->len);
    } else {
        nb = PyMem_Realloc(e->buf, cap);
    }
    if (!nb) {
        PyErr_NoMemory();
        return -1;
    }
    e->buf = nb;
    e->cap = cap;
    return 0;
}

#define RESERVE(e, n) (((e)->cap - (e)->len >= (Py_ssize_t)(n)) ? 0 : grow((e), (n)))

static inline void put8(Enc *e, unsigned v) { e->buf[e->len++] = (unsigned char)v; }
static inline void put16(Enc *e, unsigned v) {
    e->buf[e->len++] = (unsigned char)(v >> 8);
    e->buf[e->len++] = (unsigned char)v;
}
static inline void put32(Enc *e, unsigned long v) {
    e->buf[e->len++] = (unsigned char)(v >> 24);
    e->buf[e->len++] = (unsigned char)(v >> 16);
    e->buf[e->len++] = (unsigned char)(v >> 8);
    e->buf[e->len++] = (unsigned char)v;
}

static int put_raw(Enc *e, const void *p, Py_ssize_t n) {
    if (RESERVE(e, n) < 0) return -1;
    memcpy(e->buf + e->len, p, n);
    e->len += n;
    return 0;
}

/* bytes or bytearray (what the Python helpers return) */
static int put_obj(Enc *e, PyObject *b) {
    if (PyBytes_Check(b)) return put_raw(e, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    if (PyByteArray_Check(b))
        return put_raw(e, PyByteArray_AS_STRING(b), PyByteArray_GET_SIZE(b));
    PyErr_Format(PyExc_TypeError, "expected bytes from the codec, got %R", b);
    return -1;
}

/* raise NotSendable(reason, value) */
static void not_sendable(PyObject *reason, PyObject *value) {
    if (!reason) return;
    PyObject *exc = PyObject_CallFunctionObjArgs(NotSendable, reason, value, NULL);
    Py_DECREF(reason);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* While a NotSendable unwinds through a container, record the place: exc.steps += [step],
 * the step being index i (fmt NULL) or fmt % repr(key). Other exceptions pass untouched. */
static void add_step(Py_ssize_t i, const char *fmt, PyObject *key) {
    if (!PyErr_ExceptionMatches(NotSendable)) return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *step = fmt ? PyUnicode_FromFormat(fmt, key) : PyLong_FromSsize_t(i);
    PyObject *steps = step && value ? PyObject_GetAttr(value, s_steps) : NULL;
    int ok = steps && PyList_Check(steps) && PyList_Append(steps, step) == 0;
    Py_XDECREF(steps);
    Py_XDECREF(step);
    if (ok || !PyErr_Occurred()) {
        PyErr_Restore(type, value, tb);
    } else { /* the step could not be made (a failing repr): that error instead */
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
}

static int enc(Enc *e, PyObject *t, int depth);

/* the Python encoder for one value: _enc_one(t, otpy) -> its bytes */
static int enc_python(Enc *e, PyObject *t) {
    PyObject *b = PyObject_CallFunctionObjArgs(f_enc_one, t, e->otpy_obj, NULL);
    if (!b) return -1;
    int r = put_obj(e, b);
    Py_DECREF(b);
    return r;
}

static int enc_str(Enc *e, PyObject *t) {
    if (PyUnicode_IS_COMPACT_ASCII(t)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(t);
        if (n > 0xFFFFFFFFLL) return enc_python(e, t);
        if (RESERVE(e, 5 + n) < 0) return -1;
        put8(e, BINARY);
        put32(e, (unsigned long)n);
        memcpy(e->buf + e->len, PyUnicode_DATA(t), n);
        e->len += n;
        return 0;
    }
    PyObject *b = PyUnicode_AsUTF8String(t);
    if (!b) return -1;
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n > 0xFFFFFFFFLL) { /* 4 GiB or more: the Python encoder says why not */
        Py_DECREF(b);
        return enc_python(e, t);
    }
    int r = RESERVE(e, 5 + n);
    if (r == 0) {
        put8(e, BINARY);
        put32(e, (unsigned long)n);
        memcpy(e->buf + e->len, PyBytes_AS_STRING(b), n);
        e->len += n;
    }
    Py_DECREF(b);
    return r;
}

static int enc_int(Enc *e, PyObject *t) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(t, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow) return enc_python(e, t); /* beyond 64 bits: _enc_int */
    if (RESERVE(e, 11) < 0) return -1;
    if (0 <= v && v < 256) {
        put8(e, SMALL_INTEGER);
        put8(e, (unsigned)v);
    } else if (-0x80000000LL <= v && v <= 0x7FFFFFFFLL) {
        put8(e, INTEGER);
        put32(e, (unsigned long)(v & 0xFFFFFFFFLL));
    } else {
        unsigned long long mag = v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v;
        int n = 0;
        for (unsigned long long m = mag; m; m >>= 8) n++;
        put8(e, SMALL_BIG);
        put8(e, n);
        put8(e, v < 0);
        for (int i = 0; i < n; i++) put8(e, (unsigned)((mag >> (8 * i)) & 0xFF));
    }
    return 0;
}

static int enc_atom(Enc *e, PyObject *t) {
    PyObject *b = PyDict_GetItemWithError(ATOM_BYTES, t); /* borrowed */
    if (b && PyBytes_GET_SIZE(b)) return put_obj(e, b);
    if (PyErr_Occurred()) return -1;
    b = PyObject_CallOneArg(f_atom_bytes, t);
    if (!b) return -1;
    int r = put_obj(e, b);
    Py_DECREF(b);
    return r;
}

static int enc_items(Enc *e, PyObject *seq, int depth) {
    /* a list may change while its items encode (user code runs for records): read its
     * size each time, hold each item, as iterating it in Python does */
    int is_list = PyList_CheckExact(seq);
    for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq)); i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i);
        Py_INCREF(item);
        int r = enc(e, item, depth);
        Py_DECREF(item);
        if (r < 0) {
            add_step(i, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

static int enc_pid(Enc *e, PyObject *t) {
    PyObject *node = SLOT(t, pid_node_off), *id = SLOT(t, pid_id_off),
             *creation = SLOT(t, pid_creation_off);
    if (!node || !id || !creation || !PyLong_CheckExact(id) || !PyLong_CheckExact(creation) ||
        !(PyUnicode_CheckExact(node) || Py_IS_TYPE(node, Atom_T)))
        return enc_python(e, t); /* an odd pid: the Python encoder */
    PyObject *head = PyDict_GetItemWithError(PID_HEADS, node);
    if (head && PyBytes_GET_SIZE(head)) {
        if (put_obj(e, head) < 0) return -1;
    } else {
        if (PyErr_Occurred()) return -1;
        head = PyObject_CallOneArg(f_pid_head, node);
        if (!head) return -1;
        int r = put_obj(e, head);
        Py_DECREF(head);
        if (r < 0) return -1;
    }
    unsigned long long pid_id = PyLong_AsUnsignedLongLong(id);
    int bad = pid_id == (unsigned long long)-1 && PyErr_Occurred();
    unsigned long long cr = 0;
    if (!bad) {
        cr = PyLong_AsUnsignedLongLong(creation);
        bad = (cr == (unsigned long long)-1 && PyErr_Occurred()) || (cr >> 32);
    }
    if (bad) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
        }
        not_sendable(PyUnicode_FromFormat("a pid's id and creation must fit the wire, got %R", t), t);
        return -1;
    }
    if (RESERVE(e, 12) < 0) return -1;
    put32(e, (unsigned long)(pid_id & 0xFFFFFFFFULL));
    put32(e, (unsigned long)(pid_id >> 32));
    put32(e, (unsigned long)cr);
    return 0;
}

static int enc_ref(Enc *e, PyObject *t) {
    PyObject *node = SLOT(t, ref_node_off), *id = SLOT(t, ref_id_off);
    if (!node || !id || !PyLong_CheckExact(id) ||
        !(PyUnicode_CheckExact(node) || Py_IS_TYPE(node, Atom_T)))
        return enc_python(e, t);
    unsigned long long rid = PyLong_AsUnsignedLongLong(id);
    if (rid == (unsigned long long)-1 && PyErr_Occurred()) {
        /* negative, or more than 64 bits (a reference from elsewhere): _enc_ref */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return enc_python(e, t);
    }
    PyObject *cr_obj = PyDict_GetItemWithError(CREATIONS, node);
    unsigned long long cr = 0;
    if (cr_obj) {
        if (!PyLong_CheckExact(cr_obj)) return enc_python(e, t);
        cr = PyLong_AsUnsignedLongLong(cr_obj);
        if (cr == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
            PyErr_Clear();
            return enc_python(e, t);
        }
        if (cr >> 32) return enc_python(e, t);
    } else if (PyErr_Occurred()) {
        return -1;
    }
    if (RESERVE(e, 3) < 0) return -1;
    put8(e, NEWER_REFERENCE);
    put16(e, 3);
    if (enc_atom(e, node) < 0) return -1;
    if (RESERVE(e, 16) < 0) return -1;
    put32(e, (unsigned long)cr);
    put32(e, (unsigned long)(rid & 0xFFFFFFFFULL));
    put32(e, (unsigned long)(rid >> 32));
    put32(e, 0);
    return 0;
}

static int enc_list(Enc *e, PyObject *t, int depth) {
    Py_ssize_t n = PyList_GET_SIZE(t);
    if (!n) {
        if (RESERVE(e, 1) < 0) return -1;
        put8(e, NIL);
        return 0;
    }
    if (n < 65536 && PyLong_CheckExact(PyList_GET_ITEM(t, 0))) {
        /* BEAM writes a list of bytes as STRING_EXT: so do we */
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(t, i);
            if (!PyLong_CheckExact(x)) break;
            int overflow;
            long v = PyLong_AsLongAndOverflow(x, &overflow);
            if (overflow || v < 0 || v > 255) break;
        }
        if (i == n) {
            if (RESERVE(e, 3 + n) < 0) return -1;
            put8(e, STRING);
            put16(e, (unsigned)n);
            for (i = 0; i < n; i++) put8(e, (unsigned)PyLong_AsLong(PyList_GET_ITEM(t, i)));
            return 0;
        }
    }
    if (n > 0xFFFFFFFFLL) return enc_python(e, t);
    if (RESERVE(e, 5) < 0) return -1;
    put8(e, LIST);
    put32(e, (unsigned long)n);
    if (enc_items(e, t, depth) < 0) return -1;
    if (RESERVE(e, 1) < 0) return -1;
    put8(e, NIL);
    return 0;
}

static int enc_pair(Enc *e, PyObject *k, PyObject *v, int depth) {
    if (enc(e, k, depth) < 0) {
        add_step(0, " key %R", k);
        return -1;
    }
    if (enc(e, v, depth) < 0) {
        add_step(0, "[%R]", k);
        return -1;
    }
    return 0;
}

static int enc_map(Enc *e, PyObject *t, int depth) {
    Py_ssize_t n = PyDict_GET_SIZE(t);
    if (RESERVE(e, 5) < 0) return -1;
    put8(e, MAP);
    put32(e, (unsigned long)n);
    if (!e->otpy && 1 < n && n <= 32) {
        /* term_to_binary writes a small map in key order: the Python code sorts */
        PyObject *items = PyObject_CallOneArg(f_sorted_items, t);
        if (!items) return -1;
        if (!PyList_CheckExact(items)) {
            Py_DECREF(items);
            PyErr_SetString(PyExc_TypeError, "_sorted_items must return a list");
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
                Py_DECREF(items);
                PyErr_SetString(PyExc_TypeError, "_sorted_items must return pairs");
                return -1;
            }
            if (enc_pair(e, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), depth) < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        Py_DECREF(items);
        return 0;
    }
    Py_ssize_t it = 0;
    PyObject *k, *v;
    while (PyDict_Next(t, &it, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        int r = enc_pair(e, k, v, depth);
        Py_DECREF(k);
        Py_DECREF(v);
        if (r < 0) return -1;
        if (PyDict_GET_SIZE(t) != n) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            return -1;
        }
    }
    return 0;
}

/* A registered record, as encode_record of _etf._record_encoder writes it, from the
 * spec (head, get, map_head, keyed, name_bytes, names) that function made. */
static int enc_record(Enc *e, PyObject *t, PyObject *spec, int depth) {
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 6) return enc_python(e, t);
    Py_INCREF(spec); /* user code may run (a getter) and the registry change meanwhile */
    int r = -1;
    PyObject *head = PyTuple_GET_ITEM(spec, 0), *get = PyTuple_GET_ITEM(spec, 1),
             *map_head = PyTuple_GET_ITEM(spec, 2), *keyed = PyTuple_GET_ITEM(spec, 3),
             *name_bytes = PyTuple_GET_ITEM(spec, 4), *names = PyTuple_GET_ITEM(spec, 5);
    PyObject *values = PyObject_CallOneArg(get, t);
    if (!values) goto done;
    if (!PyTuple_Check(values) || !PyTuple_Check(names) || !PyList_CheckExact(keyed) ||
        PyTuple_GET_SIZE(values) > PyTuple_GET_SIZE(names)) {
        PyErr_Format(PyExc_TypeError, "a record spec does not fit its values: %R", spec);
        goto done;
    }
    if (e->otpy) {
        if (put_obj(e, head) < 0) goto done;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(values); j++) {
            if (enc(e, PyTuple_GET_ITEM(values, j), depth) < 0) {
                add_step(0, ".%U", PyTuple_GET_ITEM(names, j));
                goto done;
            }
        }
    } else {
        if (put_obj(e, map_head) < 0) goto done;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(keyed); k++) {
            PyObject *pair = PyList_GET_ITEM(keyed, k);
            Py_ssize_t i;
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                ((i = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1))) == -1 && PyErr_Occurred()) ||
                i >= PyTuple_GET_SIZE(values)) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_TypeError, "a record spec does not fit: %R", spec);
                goto done;
            }
            if (put_obj(e, PyTuple_GET_ITEM(pair, 0)) < 0) goto done;
            if (i < 0) {
                if (put_obj(e, name_bytes) < 0) goto done;
            } else if (enc(e, PyTuple_GET_ITEM(values, i), depth) < 0) {
                add_step(0, ".%U", PyTuple_GET_ITEM(names, i));
                goto done;
            }
        }
    }
    r = 0;
done:
    Py_XDECREF(values);
    Py_DECREF(spec);
    return r;
}

/* ImproperList: as _enc_improper writes it (LIST, the items, the tail, no NIL). */
static int enc_improper(Enc *e, PyObject *t, int depth) {
    PyObject *items = PyObject_GetAttr(t, s_items);
    if (!items) return -1;
    int is_list = PyList_CheckExact(items);
    if (!is_list && !PyTuple_CheckExact(items)) { /* built around its constructor */
        Py_DECREF(items);
        return enc_python(e, t);
    }
    Py_ssize_t n = is_list ? PyList_GET_SIZE(items) : PyTuple_GET_SIZE(items);
    if (n > 0xFFFFFFFFLL || RESERVE(e, 5) < 0) {
        Py_DECREF(items);
        return n > 0xFFFFFFFFLL ? enc_python(e, t) : -1;
    }
    put8(e, LIST);
    put32(e, (unsigned long)n);
    int r = enc_items(e, items, depth);
    Py_DECREF(items);
    if (r < 0) return -1;
    PyObject *tail = PyObject_GetAttr(t, s_tail);
    if (!tail) return -1;
    r = enc(e, tail, depth);
    Py_DECREF(tail);
    if (r < 0) add_step(0, ".tail", NULL);
    return r;
}

/* A value of an exception (an arg, an attribute) as _enc_exception writes it: the value,
 * or the repr of what cannot be sent (_sendable_or_repr). -1: an error while finding
 * which (the Python code raises it before anything is written), -2: while writing the
 * repr (raised later there). */
static int enc_or_repr(Enc *e, PyObject *v, int depth) {
    Py_ssize_t mark = e->len;
    if (enc(e, v, depth) == 0) return 0;
    if (!PyErr_ExceptionMatches(NotSendable)) return -1;
    PyErr_Clear();
    e->len = mark;
    PyObject *r = PyObject_Repr(v);
    if (!r) return -1;
    int rc = enc(e, r, depth);
    Py_DECREF(r);
    return rc < 0 ? -2 : 0;
}

typedef struct {
    PyObject *type, *value, *tb;
} Pending;

/* keep the first error of the writing phase, to raise once every value is known sendable
 * (the order of the Python code's errors); drop the later ones */
static void pend(Pending *p) {
    if (!p->type) PyErr_Fetch(&p->type, &p->value, &p->tb);
    else PyErr_Clear();
}

static void drop(Pending *p) {
    Py_CLEAR(p->type);
    Py_CLEAR(p->value);
    Py_CLEAR(p->tb);
}

/* An exception between otpy nodes: {'$otpy_exc', Name, Args, Attrs} from what
 * _exc_parts says, as _enc_exception writes it, its errors raised in the same order. The
 * odd ones (a name that is not text, attributes that are not a dict): the Python code. */
static int enc_exception(Enc *e, PyObject *t, int depth) {
    PyObject *parts = PyObject_CallOneArg(f_exc_parts, t);
    if (!parts) return -1;
    int r = -1;
    Pending later = {NULL, NULL, NULL};
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3) {
        PyErr_SetString(PyExc_TypeError, "_exc_parts must return (name, args, attrs)");
        goto done;
    }
    PyObject *name = PyTuple_GET_ITEM(parts, 0), *args = PyTuple_GET_ITEM(parts, 1),
             *attrs = PyTuple_GET_ITEM(parts, 2);
    Py_ssize_t name_len;
    if (!PyUnicode_CheckExact(name) || !PyTuple_CheckExact(args) || !PyDict_CheckExact(attrs) ||
        !PyUnicode_AsUTF8AndSize(name, &name_len) || PyTuple_GET_SIZE(args) > 0xFFFFFFFFLL) {
        PyErr_Clear();
        r = enc_python(e, t);
        goto done;
    }
    if (RESERVE(e, 2) < 0) goto done;
    put8(e, SMALL_TUPLE);
    put8(e, 4);
    if (enc_atom(e, EXC_TAG) < 0 || enc_str(e, name) < 0) goto done;
    /* Args: a tuple, so refused when headed by a reserved atom (an atom is sendable):
     * found once every value is known sendable, before the rest is written. */
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    int reserved = 0;
    if (n && Py_IS_TYPE(PyTuple_GET_ITEM(args, 0), Atom_T)) {
        reserved = PySet_Contains(RESERVED, PyTuple_GET_ITEM(args, 0));
        if (reserved < 0) goto done;
    }
    if (RESERVE(e, 5) < 0) goto done;
    if (n < 256) {
        put8(e, SMALL_TUPLE);
        put8(e, (unsigned)n);
    } else {
        put8(e, LARGE_TUPLE);
        put32(e, (unsigned long)n);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = enc_or_repr(e, PyTuple_GET_ITEM(args, i), depth);
        if (rc == -1) goto done;
        if (rc == -2) {
            add_step(i, NULL, NULL);
            add_step(1, NULL, NULL);
            pend(&later);
        }
    }
    /* Attrs: a map in its order (otpy), each value sendable or its repr */
    Py_ssize_t m = PyDict_GET_SIZE(attrs);
    if (RESERVE(e, 5) < 0) goto done;
    put8(e, MAP);
    put32(e, (unsigned long)m);
    Py_ssize_t it = 0;
    PyObject *k, *v;
    while (PyDict_Next(attrs, &it, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        int rc = 0;
        if (enc(e, k, depth) < 0) {
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) rc = -1;
            else {
                add_step(0, " key %R", k);
                add_step(2, NULL, NULL);
                pend(&later);
            }
        }
        if (rc == 0) {
            rc = enc_or_repr(e, v, depth);
            if (rc == -2) {
                add_step(0, "[%R]", k);
                add_step(2, NULL, NULL);
                pend(&later);
                rc = 0;
            }
        }
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) goto done;
        if (PyDict_GET_SIZE(attrs) != m) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto done;
        }
    }
    if (reserved) {
        drop(&later);
        not_sendable(PyUnicode_FromFormat(
            "tuples headed by the atom %R are reserved for otpy's own forms between nodes",
            PyTuple_GET_ITEM(args, 0)), args);
        add_step(1, NULL, NULL);
        goto done;
    }
    if (later.type) {
        PyErr_Restore(later.type, later.value, later.tb);
        later.type = later.value = later.tb = NULL;
        goto done;
    }
    r = 0;
done:
    drop(&later);
    Py_DECREF(parts);
    return r;
}

static int enc(Enc *e, PyObject *t, int depth) {
    PyTypeObject *cls = Py_TYPE(t);
    if (cls == &PyUnicode_Type) return enc_str(e, t);
    if (cls == &PyLong_Type) return enc_int(e, t);
    if (++depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "the term is nested too deep to encode");
        return -1;
    }
    if (cls == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(t);
        if (n && e->otpy && Py_IS_TYPE(PyTuple_GET_ITEM(t, 0), Atom_T)) {
            int reserved = PySet_Contains(RESERVED, PyTuple_GET_ITEM(t, 0));
            if (reserved < 0) return -1;
            if (reserved) {
                not_sendable(PyUnicode_FromFormat(
                    "tuples headed by the atom %R are reserved for otpy's own forms between nodes",
                    PyTuple_GET_ITEM(t, 0)), t);
                return -1;
            }
        }
        if (n > 0xFFFFFFFFLL) return enc_python(e, t);
        if (RESERVE(e, 5) < 0) return -1;
        if (n < 256) {
            put8(e, SMALL_TUPLE);
            put8(e, (unsigned)n);
        } else {
            put8(e, LARGE_TUPLE);
            put32(e, (unsigned long)n);
        }
        return enc_items(e, t, depth);
    }
    if (cls == Atom_T) return enc_atom(e, t);
    if (cls == Pid_T) return enc_pid(e, t);
    if (cls == &PyList_Type) return enc_list(e, t, depth);
    if (cls == &PyDict_Type) return enc_map(e, t, depth);
    if (cls == &PyBool_Type) return put_obj(e, t == Py_True ? TRUE_B : FALSE_B);
    if (t == Py_None) return put_obj(e, NIL_B);
    if (cls == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(t);
        if (!isfinite(d)) {
            not_sendable(PyUnicode_FromFormat("ETF has no infinity or NaN, got %R", t), t);
            return -1;
        }
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (RESERVE(e, 9) < 0) return -1;
        put8(e, NEW_FLOAT);
        put32(e, (unsigned long)(bits >> 32));
        put32(e, (unsigned long)(bits & 0xFFFFFFFFULL));
        return 0;
    }
    if (cls == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(t);
        if (n > 0xFFFFFFFFLL) return enc_python(e, t);
        if (e->otpy && put_obj(e, BYTES_HEAD) < 0) return -1;
        if (RESERVE(e, 5 + n) < 0) return -1;
        put8(e, BINARY);
        put32(e, (unsigned long)n);
        memcpy(e->buf + e->len, PyBytes_AS_STRING(t), n);
        e->len += n;
        return 0;
    }
    if (cls == Ref_T) return enc_ref(e, t);
    if (cls == ImproperList_T) return enc_improper(e, t, depth);
    PyObject *spec = PyDict_GetItemWithError(RECORD_SPECS, (PyObject *)cls);
    if (spec) return enc_record(e, t, spec, depth);
    if (PyErr_Occurred()) return -1;
    if (e->otpy && PyExceptionInstance_Check(t)) return enc_exception(e, t, depth);
    return enc_python(e, t); /* the first of a registered class makes its spec */
}

/* Whether the keywords of a fastcall are only otpy=... */
static int only_otpy(PyObject *kwnames) {
    if (!kwnames) return 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "otpy") != 0) return 0;
    }
    return 1;
}

/* Parse the otpy=... keyword of a fastcall function. */
static int parse_otpy(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int *otpy,
                      PyObject **otpy_obj) {
    *otpy = 1;
    *otpy_obj = Py_True;
    if (!kwnames) return 0;
    Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "otpy") != 0) {
            PyErr_Format(PyExc_TypeError, "got an unexpected keyword argument %R", name);
            return -1;
        }
        PyObject *v = args[nargs + i];
        int b = PyObject_IsTrue(v);
        if (b < 0) return -1;
        *otpy = b;
        *otpy_obj = v;
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "otp.dist._etf_accel: setup() was not called");
        return NULL;
    }
    if (nargs != 1 || !only_otpy(kwnames)) /* the odd call: the Python encode says why */
        return PyObject_Vectorcall(f_py_encode, args, nargs, kwnames);
    Enc e;
    e.buf = e.small;
    e.len = 0;
    e.cap = sizeof(e.small);
    if (parse_otpy(args, nargs, kwnames, &e.otpy, &e.otpy_obj) < 0) return NULL;
    PyObject *term = args[0];
    PyObject *result = NULL;
    if (enc(&e, term, 0) == 0) {
        result = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
    } else if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
        PyErr_Clear();
        not_sendable(PyUnicode_FromString("the term is nested too deep to encode"), term);
    }
    if (e.buf != e.small) PyMem_Free(e.buf);
    return result;
}

/* encode_frame(otpy, ctrl[, payload]) -> bytes: a distribution packet with its 4-byte
   length: 112 (pass-through), 131, ctrl, and, with a payload, 131 and the payload.
   Errors as encode's, for the term that failed. */
static PyObject *encode_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "otp.dist._etf_accel: setup() was not called");
        return NULL;
    }
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_frame(otpy, ctrl[, payload])");
        return NULL;
    }
    Enc e;
    e.buf = e.small;
    e.len = 0;
    e.cap = sizeof(e.small);
    int b = PyObject_IsTrue(args[0]);
    if (b < 0) return NULL;
    e.otpy = b;
    e.otpy_obj = b ? Py_True : Py_False;
    PyObject *result = NULL;
    PyObject *failed = args[1];
    if (RESERVE(&e, 6) < 0) goto done;
    put32(&e, 0);
    put8(&e, 112);
    put8(&e, 131);
    if (enc(&e, args[1], 0) < 0) goto fail;
    if (nargs == 3) {
        failed = args[2];
        if (RESERVE(&e, 1) < 0) goto done;
        put8(&e, 131);
        if (enc(&e, args[2], 0) < 0) goto fail;
    }
    if (e.len - 4 > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_OverflowError, "a distribution packet longer than 4 GiB");
        goto done;
    }
    {
        unsigned long n = (unsigned long)(e.len - 4);
        e.buf[0] = (unsigned char)(n >> 24);
        e.buf[1] = (unsigned char)(n >> 16);
        e.buf[2] = (unsigned char)(n >> 8);
        e.buf[3] = (unsigned char)n;
    }
    result = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
    goto done;
fail:
    if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
        PyErr_Clear();
        not_sendable(PyUnicode_FromString("the term is nested too deep to encode"), failed);
    }
done:
    if (e.buf != e.small) PyMem_Free(e.buf);
    return result;
}

/* === decoding ========================================================================= */

typedef struct {
    const unsigned char *d;
    Py_ssize_t len;
    PyObject *data; /* the bytes object */
    int otpy;
    PyObject *otpy_obj;
} Dec;

static inline unsigned long get32(const unsigned char *p) {
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) |
           ((unsigned long)p[2] << 8) | (unsigned long)p[3];
}
static inline unsigned get16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }

static PyObject *truncated(void) {
    PyErr_SetNone(PyExc_IndexError); /* turned into BadTerm by decode() */
    return NULL;
}

static PyObject *bad_term(PyObject *msg) {
    if (msg) {
        PyErr_SetObject(BadTerm, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

static PyObject *short_(Dec *x, long long end, Py_ssize_t pos) {
    return bad_term(PyUnicode_FromFormat(
        "the term is truncated at offset %zd: needs %lld more bytes up to %lld, only %zd in all",
        pos, end - (long long)pos, end, x->len));
}

/* an unsigned little-endian integer of n bytes */
static PyObject *long_from_le(const unsigned char *b, Py_ssize_t n) {
    if (n <= 8) {
        unsigned long long v = 0;
        for (Py_ssize_t i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
        return PyLong_FromUnsignedLongLong(v);
    }
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(
        b, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
#else
    return _PyLong_FromByteArray(b, n, 1, 0);
#endif
}

static PyObject *dec(Dec *x, Py_ssize_t *pos, int otpy, int depth);

/* In front of the shared caches of _etf.py (_ATOMS, _LATIN1_ATOMS, _PIDS: raw bytes ->
 * value), a small direct-mapped one that finds the value from the bytes in the input
 * without making a bytes object to look it up: the same objects, found faster. */
#define FAST_SLOTS 1024
typedef struct {
    PyObject *raw, *value;
} FastEntry;
static FastEntry fast_atoms[2][FAST_SLOTS], fast_pids[FAST_SLOTS];

static inline FastEntry *fast_slot(FastEntry *table, const unsigned char *p, Py_ssize_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return &table[h & (FAST_SLOTS - 1)];
}

static inline PyObject *fast_get(FastEntry *e, const unsigned char *p, Py_ssize_t n) {
    if (e->raw && PyBytes_GET_SIZE(e->raw) == n && memcmp(PyBytes_AS_STRING(e->raw), p, n) == 0)
        return Py_NewRef(e->value);
    return NULL;
}

static inline void fast_put(FastEntry *e, PyObject *raw, PyObject *value) {
    Py_XSETREF(e->raw, Py_NewRef(raw));
    Py_XSETREF(e->value, Py_NewRef(value));
}

static void fast_clear(void) {
    for (int i = 0; i < FAST_SLOTS; i++) {
        Py_CLEAR(fast_atoms[0][i].raw);
        Py_CLEAR(fast_atoms[0][i].value);
        Py_CLEAR(fast_atoms[1][i].raw);
        Py_CLEAR(fast_atoms[1][i].value);
        Py_CLEAR(fast_pids[i].raw);
        Py_CLEAR(fast_pids[i].value);
    }
}

static PyObject *dec_atom(Dec *x, Py_ssize_t start, Py_ssize_t end, int latin1) {
    PyObject *cache = latin1 ? LATIN1_ATOMS : ATOMS;
    FastEntry *slot = fast_slot(fast_atoms[latin1], x->d + start, end - start);
    PyObject *a = fast_get(slot, x->d + start, end - start);
    if (a) return a;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)x->d + start, end - start);
    if (!raw) return NULL;
    a = PyDict_GetItemWithError(cache, raw);
    if (a) {
        Py_INCREF(a);
        fast_put(slot, raw, a);
        Py_DECREF(raw);
        return a;
    }
    if (PyErr_Occurred()) goto fail;
    PyObject *s = latin1 ? PyUnicode_DecodeLatin1((const char *)x->d + start, end - start, NULL)
                         : PyUnicode_DecodeUTF8((const char *)x->d + start, end - start, NULL);
    if (!s) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto fail;
        PyErr_Clear();
        PyObject *head = PyBytes_FromStringAndSize(PyBytes_AS_STRING(raw),
                                                   Py_MIN(PyBytes_GET_SIZE(raw), 40));
        if (head) {
            bad_term(PyUnicode_FromFormat("an atom is not valid UTF-8: %R", head));
            Py_DECREF(head);
        }
        goto fail;
    }
    a = PyObject_CallOneArg((PyObject *)Atom_T, s);
    Py_DECREF(s);
    if (!a) goto fail;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    if (n > 255) {
        Py_DECREF(a);
        bad_term(PyUnicode_FromFormat("an atom has at most 255 characters, got %zd", n));
        goto fail;
    }
    if (PyDict_GET_SIZE(cache) < MAX_CACHE) {
        if (PyDict_SetItem(cache, raw, a) < 0) {
            Py_DECREF(a);
            goto fail;
        }
        fast_put(slot, raw, a); /* only what the shared cache holds too */
    }
    Py_DECREF(raw);
    return a;
fail:
    Py_DECREF(raw);
    return NULL;
}

static PyObject *dec_node(Dec *x, Py_ssize_t *pos, int depth) {
    PyObject *node = dec(x, pos, 0, depth);
    if (!node) return NULL;
    if (!Py_IS_TYPE(node, Atom_T)) {
        bad_term(PyUnicode_FromFormat("expected an atom for a node name at offset %zd, got %R",
                                      *pos, node));
        Py_DECREF(node);
        return NULL;
    }
    return node;
}

static PyObject *new_pid(PyObject *node, PyObject *id, PyObject *creation) {
    PyObject *p = Pid_T->tp_alloc(Pid_T, 0);
    if (!p) {
        Py_DECREF(node);
        Py_DECREF(id);
        Py_DECREF(creation);
        return NULL;
    }
    SLOT(p, pid_node_off) = node;
    SLOT(p, pid_id_off) = id;
    SLOT(p, pid_creation_off) = creation;
    return p;
}

static PyObject *dec_pid(Dec *x, Py_ssize_t *pos, int depth) {
    Py_ssize_t p0 = *pos;
    if (p0 + 1 >= x->len) return truncated();
    int cached = x->d[p0 + 1] == SMALL_ATOM_UTF8;
    if (cached) {
        if (p0 + 2 >= x->len) return truncated();
        Py_ssize_t end = p0 + 15 + x->d[p0 + 2];
        if (end <= x->len) {
            PyObject *pid = fast_get(fast_slot(fast_pids, x->d + p0, end - p0), x->d + p0, end - p0);
            if (pid) {
                *pos = end;
                return pid;
            }
            PyObject *raw = PyBytes_FromStringAndSize((const char *)x->d + p0, end - p0);
            if (!raw) return NULL;
            pid = PyDict_GetItemWithError(PIDS, raw);
            if (pid) {
                Py_INCREF(pid);
                fast_put(fast_slot(fast_pids, x->d + p0, end - p0), raw, pid);
                Py_DECREF(raw);
                *pos = end;
                return pid;
            }
            Py_DECREF(raw);
            if (PyErr_Occurred()) return NULL;
        }
    }
    Py_ssize_t p = p0 + 1;
    PyObject *node = dec_node(x, &p, depth);
    if (!node) return NULL;
    if (p + 12 > x->len) {
        Py_DECREF(node);
        return truncated();
    }
    unsigned long long id = get32(x->d + p) | ((unsigned long long)get32(x->d + p + 4) << 32);
    PyObject *id_o = PyLong_FromUnsignedLongLong(id);
    PyObject *cr_o = id_o ? PyLong_FromUnsignedLong(get32(x->d + p + 8)) : NULL;
    if (!cr_o) {
        Py_DECREF(node);
        Py_XDECREF(id_o);
        return NULL;
    }
    PyObject *pid = new_pid(node, id_o, cr_o);
    if (!pid) return NULL;
    Py_ssize_t end = p + 12;
    if (cached) {
        if (PyDict_GET_SIZE(PIDS) >= MAX_CACHE) PyDict_Clear(PIDS);
        PyObject *raw = PyBytes_FromStringAndSize((const char *)x->d + p0, end - p0);
        if (!raw || PyDict_SetItem(PIDS, raw, pid) < 0) {
            Py_XDECREF(raw);
            Py_DECREF(pid);
            return NULL;
        }
        fast_put(fast_slot(fast_pids, x->d + p0, end - p0), raw, pid);
        Py_DECREF(raw);
    }
    *pos = end;
    return pid;
}

static PyObject *dec_ref(Dec *x, Py_ssize_t *pos, int tag, int depth) {
    Py_ssize_t p0 = *pos;
    if (p0 + 3 > x->len) return truncated();
    unsigned nwords = get16(x->d + p0 + 1);
    Py_ssize_t p = p0 + 3;
    PyObject *node = dec_node(x, &p, depth);
    if (!node) return NULL;
    unsigned long creation;
    if (tag == NEWER_REFERENCE) {
        if (p + 4 > x->len) goto truncated;
        creation = get32(x->d + p);
        p += 4;
    } else {
        if (p >= x->len) goto truncated;
        creation = x->d[p];
        p += 1;
    }
    if (!(0 < nwords && nwords <= 5)) {
        Py_DECREF(node);
        return bad_term(
            PyUnicode_FromFormat("a reference has 1..5 words, got %u at offset %zd", nwords, p0));
    }
    Py_ssize_t end = p + 4 * (Py_ssize_t)nwords;
    if (end > x->len) {
        Py_DECREF(node);
        return short_(x, end, p0);
    }
    unsigned char buf[25];
    memset(buf, 0, sizeof buf);
    for (unsigned i = 0; i < nwords; i++) {
        unsigned long w = get32(x->d + p + 4 * i);
        buf[4 * i] = w & 0xFF;
        buf[4 * i + 1] = (w >> 8) & 0xFF;
        buf[4 * i + 2] = (w >> 16) & 0xFF;
        buf[4 * i + 3] = (w >> 24) & 0xFF;
    }
    int foreign = nwords != 3 || tag != NEWER_REFERENCE;
    if (!foreign) {
        PyObject *mine = PyDict_GetItemWithError(CREATIONS, node);
        if (mine) {
            PyObject *c = PyLong_FromUnsignedLong(creation);
            if (!c) goto fail;
            int eq = PyObject_RichCompareBool(c, mine, Py_EQ);
            Py_DECREF(c);
            if (eq < 0) goto fail;
            foreign = !eq;
        } else {
            if (PyErr_Occurred()) goto fail;
            foreign = creation != 0;
        }
    }
    Py_ssize_t size = 4 * nwords;
    if (foreign) {
        unsigned long long meta = nwords | ((unsigned long long)creation << 3);
        for (int i = 0; i < 5; i++) buf[20 + i] = (meta >> (8 * i)) & 0xFF;
        size = 25;
    }
    PyObject *rid = long_from_le(buf, size);
    if (!rid) goto fail;
    PyObject *ref = Ref_T->tp_alloc(Ref_T, 0);
    if (!ref) {
        Py_DECREF(rid);
        goto fail;
    }
    SLOT(ref, ref_node_off) = node;
    SLOT(ref, ref_id_off) = rid;
    Py_INCREF(Py_None);
    SLOT(ref, ref_owner_off) = Py_None;
    *pos = end;
    return ref;
truncated:
    Py_DECREF(node);
    return truncated();
fail:
    Py_DECREF(node);
    return NULL;
}

static PyObject *dec_binary(Dec *x, Py_ssize_t *pos, int otpy) {
    Py_ssize_t p = *pos;
    if (p + 5 > x->len) return truncated();
    Py_ssize_t start = p + 5;
    unsigned long n = get32(x->d + p + 1);
    if ((unsigned long long)n > (unsigned long long)(x->len - start))
        return short_(x, (long long)start + (long long)n, p);
    Py_ssize_t end = start + (Py_ssize_t)n;
    *pos = end;
    const char *s = (const char *)x->d + start;
    if (otpy) {
        PyObject *u = PyUnicode_DecodeUTF8(s, end - start, NULL);
        if (u || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return u;
        PyErr_Clear();
    }
    return PyBytes_FromStringAndSize(s, end - start);
}

static PyObject NOT_HANDLED_OBJ; /* a marker, never a real object */
#define NOT_HANDLED (&NOT_HANDLED_OBJ)

/* {'$otpy_rec', Name, Field1, ...} of a registered class, as _dec_record and the builder
 * of _record_decoder make it; NOT_HANDLED for what they raise about (they say why). */
static PyObject *dec_record(PyObject *t) {
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    if (n < 2 || !Py_IS_TYPE(PyTuple_GET_ITEM(t, 1), Atom_T)) return Py_NewRef(t);
    PyObject *name = PyTuple_GET_ITEM(t, 1);
    PyObject *spec = PyDict_GetItemWithError(RECORD_CLASSES, name);
    if (!spec) return PyErr_Occurred() ? NULL : NOT_HANDLED;
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 2) return NOT_HANDLED;
    Py_ssize_t want = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
    if (want == -1 && PyErr_Occurred()) return NULL;
    if (want != n) return NOT_HANDLED;
    PyObject *cls = Py_NewRef(PyTuple_GET_ITEM(spec, 0));
    PyObject *r = PyObject_Vectorcall(cls, &PyTuple_GET_ITEM(t, 2), n - 2, NULL);
    if (!r && PyErr_ExceptionMatches(PyExc_Exception)) { /* the class's own checks */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *qualname = PyObject_GetAttrString(cls, "__qualname__");
        if (qualname) {
            bad_term(PyUnicode_FromFormat("a %U record does not build a %S: %S", name, qualname,
                                          value ? value : Py_None));
            Py_DECREF(qualname);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    Py_DECREF(cls);
    return r;
}

static PyObject *dec_tuple(Dec *x, Py_ssize_t *pos, int otpy, int tag, int depth) {
    Py_ssize_t p = *pos, n;
    if (tag == SMALL_TUPLE) {
        if (p + 1 >= x->len) return truncated();
        n = x->d[p + 1];
        p += 2;
    } else {
        if (p + 5 > x->len) return truncated();
        unsigned long n32 = get32(x->d + p + 1);
        p += 5;
        if ((unsigned long long)n32 > (unsigned long long)(x->len - p))
            return bad_term(PyUnicode_FromFormat(
                "a tuple of %lu elements at offset %zd is longer than the %zd bytes left", n32,
                p - 5, x->len - p));
        n = (Py_ssize_t)n32;
    }
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = dec(x, &p, otpy, depth);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    *pos = p;
    if (otpy && n && Py_IS_TYPE(PyTuple_GET_ITEM(t, 0), Atom_T)) {
        PyObject *build = PyDict_GetItemWithError(RECORD_DEC, PyTuple_GET_ITEM(t, 0));
        if (build == f_dec_bytes_record && n == 2) { /* {'$otpy_bytes', Binary}: bytes */
            PyObject *b = PyTuple_GET_ITEM(t, 1);
            b = PyUnicode_CheckExact(b) ? PyUnicode_AsUTF8String(b) : Py_NewRef(b);
            Py_DECREF(t);
            return b;
        }
        if (build == f_dec_record) {
            PyObject *r = dec_record(t);
            if (r != NOT_HANDLED) {
                Py_DECREF(t);
                return r;
            }
        }
        if (build) {
            Py_INCREF(build);
            PyObject *items = PySequence_List(t);
            Py_DECREF(t);
            if (!items) {
                Py_DECREF(build);
                return NULL;
            }
            PyObject *r = PyObject_CallOneArg(build, items);
            Py_DECREF(items);
            Py_DECREF(build);
            return r;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/* ImproperList(items, tail) for a tuple of items (not empty) and a tail that is neither
 * a list nor an ImproperList: what its constructor makes, without running it (it only
 * checks those and stores both, as object.__setattr__ does). */
static PyObject *new_improper(PyObject *items, PyObject *tail) {
    PyObject *r = ImproperList_T->tp_new(ImproperList_T, EMPTY_TUPLE, NULL);
    if (!r) return NULL;
    if (PyObject_GenericSetAttr(r, s_items, items) < 0 ||
        PyObject_GenericSetAttr(r, s_tail, tail) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *dec_list(Dec *x, Py_ssize_t *pos, int otpy, int depth) {
    Py_ssize_t p = *pos;
    if (p + 5 > x->len) return truncated();
    unsigned long n32 = get32(x->d + p + 1);
    p += 5;
    if ((unsigned long long)n32 > (unsigned long long)(x->len - p))
        return bad_term(PyUnicode_FromFormat(
            "a list of %lu elements at offset %zd is longer than the %zd bytes left", n32, p - 5,
            x->len - p));
    Py_ssize_t n = (Py_ssize_t)n32;
    PyObject *items = PyList_New(n);
    if (!items) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = dec(x, &p, otpy, depth);
        if (!v) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, i, v);
    }
    if (p >= x->len) {
        Py_DECREF(items);
        return truncated();
    }
    if (x->d[p] == NIL) {
        *pos = p + 1;
        return items;
    }
    PyObject *tail = dec(x, &p, otpy, depth);
    if (!tail) {
        Py_DECREF(items);
        return NULL;
    }
    PyObject *r;
    if (PyList_CheckExact(tail)) { /* a non-canonical [a | [b]]: still a proper list */
        r = PySequence_Concat(items, tail);
    } else if (n && !PyList_Check(tail) && !PyObject_TypeCheck(tail, ImproperList_T)) {
        /* [a, b | T]: ImproperList(items, T) built here, as its constructor does */
        PyObject *tup = PyList_AsTuple(items);
        r = tup ? new_improper(tup, tail) : NULL;
        Py_XDECREF(tup);
    } else { /* no items, or a tail to fold in (non-canonical): _improper says */
        PyObject *start = PyLong_FromSsize_t(*pos);
        r = start ? PyObject_CallFunctionObjArgs(f_improper, items, tail, start, NULL) : NULL;
        Py_XDECREF(start);
    }
    Py_DECREF(items);
    Py_DECREF(tail);
    if (r) *pos = p;
    return r;
}

static PyObject *dec_map(Dec *x, Py_ssize_t *pos, int otpy, int depth) {
    Py_ssize_t start = *pos, p = start;
    if (p + 5 > x->len) return truncated();
    unsigned long n32 = get32(x->d + p + 1);
    p += 5;
    if (2ULL * n32 > (unsigned long long)(x->len - p))
        return bad_term(PyUnicode_FromFormat(
            "a map of %lu pairs at offset %zd is longer than the %zd bytes left", n32, start,
            x->len - p));
    Py_ssize_t n = (Py_ssize_t)n32;
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = dec(x, &p, otpy, depth);
        if (!k) goto fail;
        PyObject *v = dec(x, &p, otpy, depth);
        if (!v) {
            Py_DECREF(k);
            goto fail;
        }
        int r = PyDict_SetItem(out, k, v);
        Py_DECREF(v);
        if (r < 0) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                bad_term(PyUnicode_FromFormat(
                    "a map key at offset %zd has no Python form as a dict key (unhashable %s): %R",
                    start, Py_TYPE(k)->tp_name, k));
            }
            Py_DECREF(k);
            goto fail;
        }
        Py_DECREF(k);
    }
    *pos = p;
    if (!otpy) {
        PyObject *name = PyDict_GetItemWithError(out, s_struct);
        if (name && Py_IS_TYPE(name, Atom_T)) {
            PyObject *r = PyObject_CallFunctionObjArgs(f_map_struct, out, name, NULL);
            Py_DECREF(out);
            return r;
        }
        if (PyErr_Occurred()) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* the Python decoder for one term of a rare tag: _dec(d, pos, otpy) -> (term, end) */
static PyObject *dec_python(Dec *x, Py_ssize_t *pos, int otpy) {
    PyObject *p = PyLong_FromSsize_t(*pos);
    if (!p) return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(f_dec_one, x->data, p, otpy ? Py_True : Py_False,
                                               NULL);
    Py_DECREF(p);
    if (!r) return NULL;
    if (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "_dec must return (term, end)");
        return NULL;
    }
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1));
    if (end == -1 && PyErr_Occurred()) {
        Py_DECREF(r);
        return NULL;
    }
    PyObject *v = PyTuple_GET_ITEM(r, 0);
    Py_INCREF(v);
    Py_DECREF(r);
    *pos = end;
    return v;
}

static PyObject *dec(Dec *x, Py_ssize_t *pos, int otpy, int depth) {
    Py_ssize_t p = *pos;
    if (p >= x->len) return truncated();
    int tag = x->d[p];
    switch (tag) {
    case BINARY:
        return dec_binary(x, pos, otpy);
    case SMALL_INTEGER:
        if (p + 1 >= x->len) return truncated();
        *pos = p + 2;
        return Py_NewRef(SMALL_INTS[x->d[p + 1]]);
    case INTEGER: {
        if (p + 5 > x->len) return truncated();
        *pos = p + 5;
        return PyLong_FromLong((long)(int32_t)get32(x->d + p + 1));
    }
    case SMALL_TUPLE:
    case LARGE_TUPLE: {
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_tuple(x, pos, otpy, tag, depth + 1);
    }
    case SMALL_ATOM_UTF8:
    case SMALL_ATOM: {
        if (p + 1 >= x->len) return truncated();
        Py_ssize_t end = p + 2 + x->d[p + 1];
        if (end > x->len) return short_(x, end, p);
        PyObject *a = dec_atom(x, p + 2, end, tag == SMALL_ATOM);
        if (a) *pos = end;
        return a;
    }
    case ATOM_UTF8:
    case ATOM: {
        if (p + 3 > x->len) return truncated();
        Py_ssize_t end = p + 3 + get16(x->d + p + 1);
        if (end > x->len) return short_(x, end, p);
        PyObject *a = dec_atom(x, p + 3, end, tag == ATOM);
        if (a) *pos = end;
        return a;
    }
    case SMALL_BIG:
    case LARGE_BIG: {
        unsigned long n32;
        long long start;
        if (tag == SMALL_BIG) {
            if (p + 1 >= x->len) return truncated();
            n32 = x->d[p + 1];
            start = (long long)p + 3;
        } else {
            if (p + 5 > x->len) return truncated();
            n32 = get32(x->d + p + 1);
            start = (long long)p + 6;
        }
        if (start + (long long)n32 > (long long)x->len) return short_(x, start + n32, p);
        Py_ssize_t n = (Py_ssize_t)n32, end = (Py_ssize_t)start + n;
        int sign = x->d[start - 1];
        if (sign > 1)
            return bad_term(PyUnicode_FromFormat(
                "a big integer's sign byte is 0 or 1, got %d at offset %zd", sign, p));
        PyObject *big = long_from_le(x->d + start, n);
        if (big && sign) {
            PyObject *neg = PyNumber_Negative(big);
            Py_DECREF(big);
            big = neg;
        }
        if (big) *pos = end;
        return big;
    }
    case NIL:
        *pos = p + 1;
        return PyList_New(0);
    case LIST:
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_list(x, pos, otpy, depth + 1);
    case NEW_PID:
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_pid(x, pos, depth + 1);
    case MAP:
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_map(x, pos, otpy, depth + 1);
    case NEWER_REFERENCE:
    case NEW_REFERENCE:
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_ref(x, pos, tag, depth + 1);
    case NEW_FLOAT: {
        if (p + 9 > x->len) return truncated();
        uint64_t bits = ((uint64_t)get32(x->d + p + 1) << 32) | get32(x->d + p + 5);
        double v;
        memcpy(&v, &bits, 8);
        *pos = p + 9;
        return PyFloat_FromDouble(v);
    }
    case STRING: {
        if (p + 3 > x->len) return truncated();
        Py_ssize_t start = p + 3, end = start + get16(x->d + p + 1);
        if (end > x->len) return short_(x, end, p);
        PyObject *l = PyList_New(end - start);
        if (!l) return NULL;
        for (Py_ssize_t i = start; i < end; i++)
            PyList_SET_ITEM(l, i - start, Py_NewRef(SMALL_INTS[x->d[i]]));
        *pos = end;
        return l;
    }
    default:
        /* the rare and legacy tags, and the unknown ones: the Python code */
        if (depth >= MAX_DEPTH) goto too_deep;
        return dec_python(x, pos, otpy);
    }
too_deep:
    PyErr_SetString(PyExc_RecursionError, "the term is nested too deep to decode");
    return NULL;
}

static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "otp.dist._etf_accel: setup() was not called");
        return NULL;
    }
    if (nargs < 1 || nargs > 2 || (nargs == 2 && !PyLong_CheckExact(args[1])) ||
        !only_otpy(kwnames))
        goto python; /* the odd call (pos by keyword, ...): the Python decode */
    Dec x;
    if (parse_otpy(args, nargs, kwnames, &x.otpy, &x.otpy_obj) < 0) return NULL;
    Py_ssize_t pos = 0;
    if (nargs == 2) {
        pos = PyLong_AsSsize_t(args[1]);
        if (pos == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto python;
        }
        if (pos < 0) goto python;
    }
 PyObject *owned = NULL;
    x.data = args[0];
    if (!PyBytes_CheckExact(x.data)) { /* as decode() does: bytes(data) */
        owned = x.data = PyObject_CallOneArg((PyObject *)&PyBytes_Type, x.data);
        if (!owned) return NULL;
    }
    x.d = (const unsigned char *)PyBytes_AS_STRING(x.data);
    x.len = PyBytes_GET_SIZE(x.data);
    Py_ssize_t start = pos;
    PyObject *term = dec(&x, &pos, x.otpy, 0);
    Py_XDECREF(owned);
    if (!term) {
        if (PyErr_ExceptionMatches(BadTerm)) return NULL;
        if (PyErr_ExceptionMatches(PyExc_IndexError) || PyErr_ExceptionMatches(StructError)) {
            PyErr_Clear();
            return bad_term(PyUnicode_FromFormat(
                "the term is truncated: %zd bytes from offset %zd", x.len - start, start));
        }
        if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear();
            return bad_term(PyUnicode_FromString("the term is nested too deep to decode"));
        }
        return NULL;
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    if (!end) {
        Py_DECREF(term);
        return NULL;
    }
    PyObject *r = PyTuple_Pack(2, term, end);
    Py_DECREF(term);
    Py_DECREF(end);
    return r;
python:
    return PyObject_Vectorcall(f_py_decode, args, nargs, kwnames);
}

/* === setup ============================================================================ */

static PyObject *need(PyObject *ns, const char *name) {
    PyObject *v = PyDict_GetItemString(ns, name);
    if (!v) {
        PyErr_Format(PyExc_RuntimeError, "otp.dist._etf_accel.setup: %s is missing", name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

static int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *off) {
    PyObject *descr = PyDict_GetItemString(tp->tp_dict, name);
    if (!descr || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_RuntimeError, "otp.dist._etf_accel.setup: %s.%s is not a slot",
                     tp->tp_name, name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)descr)->d_member->offset;
    return 0;
}

static PyObject *setup(PyObject *self, PyObject *ns) {
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "setup expects the globals() of otp.dist._etf");
        return NULL;
    }
    ready = 0; /* until everything is taken: encode/decode refuse to run half set up */
    fast_clear();
#define NEED(var, name)                                                                    \
    do {                                                                                   \
        Py_XSETREF(var, need(ns, name));                                                   \
        if (!var) return NULL;                                                             \
    } while (0)
#define NEED_T(var, name)                                                                  \
    do {                                                                                   \
        PyObject *_t = need(ns, name);                                                     \
        if (!_t) return NULL;                                                              \
        if (!PyType_Check(_t)) {                                                           \
            Py_DECREF(_t);                                                                 \
            PyErr_Format(PyExc_TypeError, "setup: %s is not a class", name);               \
            return NULL;                                                                   \
        }                                                                                  \
        Py_XSETREF(var, (PyTypeObject *)_t);                                               \
    } while (0)
    NEED_T(Atom_T, "Atom");
    NEED_T(Pid_T, "Pid");
    NEED_T(Ref_T, "Ref");
    NEED_T(ImproperList_T, "ImproperList");
    NEED(NotSendable, "NotSendable");
    NEED(BadTerm, "BadTerm");
    NEED(ATOM_BYTES, "_ATOM_BYTES");
    NEED(PID_HEADS, "_PID_HEADS");
    NEED(CREATIONS, "_CREATIONS");
    NEED(ATOMS, "_ATOMS");
    NEED(LATIN1_ATOMS, "_LATIN1_ATOMS");
    NEED(PIDS, "_PIDS");
    NEED(RECORD_DEC, "_RECORD_DEC");
    NEED(RESERVED, "_RESERVED");
    NEED(RECORD_SPECS, "_RECORD_SPECS");
    NEED(RECORD_CLASSES, "_RECORD_CLASSES");
    NEED(f_dec_record, "_dec_record");
    NEED(f_dec_bytes_record, "_dec_bytes_record");
    NEED(f_exc_parts, "_exc_parts");
    NEED(EXC_TAG, "_EXC_TAG");
    NEED(f_atom_bytes, "_atom_bytes");
    NEED(f_pid_head, "_pid_head");
    NEED(f_enc_one, "_enc_one");
    NEED(f_sorted_items, "_sorted_items");
    NEED(f_dec_one, "_dec");
    NEED(f_improper, "_improper");
    NEED(f_map_struct, "_map_struct");
    NEED(f_py_decode, "_py_decode");
    NEED(f_py_encode, "_py_encode");
    NEED(TRUE_B, "_TRUE");
    NEED(FALSE_B, "_FALSE");
    NEED(NIL_B, "_NILATOM");
    NEED(BYTES_HEAD, "_BYTES_HEAD");
    PyObject *dicts[] = {ATOM_BYTES, PID_HEADS, CREATIONS, ATOMS,
                         LATIN1_ATOMS, PIDS, RECORD_DEC, RECORD_SPECS, RECORD_CLASSES};
    for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
        if (!PyDict_CheckExact(dicts[i])) {
            PyErr_SetString(PyExc_TypeError, "setup: the codec's caches must be dicts");
            return NULL;
        }
    }
    if (!PyFrozenSet_CheckExact(RESERVED)) {
        PyErr_SetString(PyExc_TypeError, "setup: _RESERVED must be a frozenset");
        return NULL;
    }
    PyObject *bs[] = {TRUE_B, FALSE_B, NIL_B, BYTES_HEAD};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
        if (!PyBytes_CheckExact(bs[i])) {
            PyErr_SetString(PyExc_TypeError, "setup: the fixed atoms must be bytes");
            return NULL;
        }
    }
    if (slot_offset(Pid_T, "node", &pid_node_off) < 0 ||
        slot_offset(Pid_T, "id", &pid_id_off) < 0 ||
        slot_offset(Pid_T, "creation", &pid_creation_off) < 0 ||
        slot_offset(Ref_T, "node", &ref_node_off) < 0 ||
        slot_offset(Ref_T, "id", &ref_id_off) < 0 ||
        slot_offset(Ref_T, "owner", &ref_owner_off) < 0)
        return NULL;
    if (!Py_IS_TYPE(Atom_T, &PyType_Type) || !PyType_IsSubtype(Atom_T, &PyUnicode_Type)) {
        PyErr_SetString(PyExc_TypeError, "setup: Atom must be a str subclass");
        return NULL;
    }
    ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)setup, METH_O,
     "setup(namespace): take the classes, caches and helpers of otp.dist._etf."},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL | METH_KEYWORDS,
     "encode(term, *, otpy=True) -> bytes: as otp.dist._etf's Python encode."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL | METH_KEYWORDS,
     "decode(data, pos=0, *, otpy=True) -> (term, end): as otp.dist._etf's Python decode."},
    {"encode_frame", (PyCFunction)(void (*)(void))encode_frame, METH_FASTCALL,
     "encode_frame(otpy, ctrl[, payload]) -> bytes: a distribution packet, length first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_etf_accel",
    "The C accelerator of the External Term Format codec (otp.dist._etf).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__etf_accel(void) {
    PyObject *struct_mod = PyImport_ImportModule("struct");
    if (!struct_mod) return NULL;
    StructError = PyObject_GetAttrString(struct_mod, "error");
    Py_DECREF(struct_mod);
    if (!StructError) return NULL;
    s_steps = PyUnicode_InternFromString("steps");
    s_struct = PyUnicode_InternFromString("__struct__");
    s_items = PyUnicode_InternFromString("items");
    s_tail = PyUnicode_InternFromString("tail");
    EMPTY_TUPLE = PyTuple_New(0);
    if (!s_steps || !s_struct || !s_items || !s_tail || !EMPTY_TUPLE) return NULL;
    for (int i = 0; i < 256; i++) {
        SMALL_INTS[i] = PyLong_FromLong(i);
        if (!SMALL_INTS[i]) return NULL;
    }
    return PyModule_Create(&module);
}
