//! Vectorcall (`METH_FASTCALL`) entry points written against the C API for the calls made
//! once per write: the `prometheus_client` drop-in's `labels(...)` (`fast_labels`), and the
//! common call of the native classes' `labels` (label values seen before, by position) and
//! write methods (`Counter.inc`, `Gauge.inc`/`dec`/`set`, `Histogram.observe`,
//! `Summary.observe`, one number by position), listed with `fast_methods!` in `metrics.rs`.
//! PyO3's argument handling costs more than such a call's work; every other call goes to
//! `prometheus_client`'s code or to the PyO3 method, which answer as before.
//!
//! The only `unsafe` of this crate. These entry points are not PyO3's, which count the GIL
//! as held: a `Py` dropped in them would be queued for a later decref (with a lock and an
//! allocation), so their fast paths hold only `Bound`s and the C API's borrowed references,
//! and their fallbacks run inside `Python::attach`.

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use pyo3::exceptions::{PyReferenceError, PyRuntimeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyNone, PyString, PyTuple, PyType, PyWeakrefReference};

/// Label sets remembered by the identity of their values, per metric.
const RECENT: usize = 8;
/// The most labels a remembered label set has (longer ones take the tuple path every time).
const MAX_REMEMBERED_LABELS: usize = 8;

/// The state behind the native `labels(...)` of one labelled `prometheus_client` metric,
/// bound to it as an instance attribute by the drop-in (`fast_labels`).
///
/// A label set seen before, given by position, is found in the metric's own `_metrics` dict
/// with no Python frame and no lock; every other call goes to `prometheus_client`'s own
/// `labels`, which validates, converts and creates. The dict is held itself (no attribute
/// lookup per call): `prometheus_client` changes it in place (`labels`, `remove`,
/// `remove_by_labels`) except in `clear()`, which replaces it, and the drop-in's `clear`
/// binds a new `labels` then. The metric is held weakly (for the fallback), so binding
/// creates no reference cycle. Recent label sets are remembered (`Recent`).
#[pyclass(frozen, module = "shmetrics._native", name = "FastLabels")]
pub(crate) struct FastLabels {
    metric: Py<PyWeakrefReference>,
    fallback: Py<PyAny>,
    children: Py<PyDict>,
    recent: Recent,
}

/// The last `RECENT` label sets found in a children dict, given as exact `str` objects,
/// remembered with those objects (replaced in turn): a call with the very same objects
/// (string literals in the caller's code are) looks the dict up with the remembered key
/// tuple instead of building one. The child is still read from the dict, so a removed or
/// replaced child is seen at once.
pub(crate) struct Recent(UnsafeCell<RecentKeys>);

#[derive(Default)]
struct RecentKeys {
    keys: [Option<RememberedKey>; RECENT],
    next: usize,
}

/// A key tuple of `_metrics` whose items are exact `str` objects, and those items.
struct RememberedKey {
    key: Py<PyTuple>,
    items: [*mut ffi::PyObject; MAX_REMEMBERED_LABELS],
    len: usize,
}

// SAFETY: `Recent` is only touched by the `labels` entry points and drop, with the GIL held
// (this crate is built for the stable ABI, which only GIL-enabled interpreters load), and
// no borrow of it spans a call that can run Python code (which could switch threads or
// re-enter): lookups and the fallback run between borrows; dropping a remembered key runs
// no Python code (its items are exact `str`s). Its raw pointers are the items of the tuple
// it holds, alive as long as it.
unsafe impl Sync for Recent {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Recent {}

impl Recent {
    pub(crate) fn new() -> Self {
        Self(UnsafeCell::new(RecentKeys::default()))
    }

    /// The remembered key whose items are `args`, if any.
    fn find<'py>(
        &self,
        py: Python<'py>,
        args: &[*mut ffi::PyObject],
    ) -> Option<Bound<'py, PyTuple>> {
        // SAFETY: see `unsafe impl Sync for Recent`; the borrow ends before this returns.
        let keys = unsafe { &*self.0.get() };
        keys.keys.iter().flatten().find_map(|remembered| {
            (remembered.items.get(..remembered.len) == Some(args))
                .then(|| remembered.key.bind(py).clone())
        })
    }

    /// Remembers `key` (whose items are `args`, at most `MAX_REMEMBERED_LABELS` of them),
    /// replacing the oldest.
    fn remember(&self, key: Bound<'_, PyTuple>, args: &[*mut ffi::PyObject]) {
        if args.len() > MAX_REMEMBERED_LABELS {
            return;
        }
        let py = key.py();
        let mut items = [std::ptr::null_mut(); MAX_REMEMBERED_LABELS];
        items[..args.len()].copy_from_slice(args);
        let remembered = RememberedKey {
            key: key.unbind(),
            items,
            len: args.len(),
        };
        // SAFETY: see `unsafe impl Sync for Recent`.
        let keys = unsafe { &mut *self.0.get() };
        let slot = keys.next;
        keys.next = (slot + 1) % RECENT;
        let replaced = keys.keys[slot].replace(remembered);
        release(py, replaced);
    }

    /// Forgets `key` (its child was removed from the dict).
    fn forget(&self, key: &Bound<'_, PyTuple>) {
        // SAFETY: see `unsafe impl Sync for Recent`.
        let keys = unsafe { &mut *self.0.get() };
        for slot in &mut keys.keys {
            if slot.as_ref().is_some_and(|r| r.key.is(key)) {
                release(key.py(), slot.take());
            }
        }
    }
}

/// Drops a remembered key now. A `Py` dropped outside PyO3's own entry points is queued for
/// a later decref (with a lock and an allocation); the entry points here are not such, so
/// their references are dropped as `Bound`s. A tuple of exact `str`s runs no Python code
/// when freed.
fn release(py: Python<'_>, remembered: Option<RememberedKey>) {
    if let Some(remembered) = remembered {
        drop(remembered.key.into_bound(py));
    }
}

/// `labels(...)` for `metric`: a builtin function bound to a new `FastLabels`, which calls
/// `fallback(metric, *values, **by_name)` for every call it does not answer itself.
#[pyfunction]
pub(crate) fn fast_labels<'py>(
    metric: &Bound<'py, PyAny>,
    fallback: Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = metric.py();
    let state = Bound::new(
        py,
        FastLabels {
            metric: PyWeakrefReference::new(metric)?.unbind(),
            fallback,
            children: metric
                .getattr(pyo3::intern!(py, "_metrics"))?
                .cast_into::<PyDict>()?
                .unbind(),
            recent: Recent::new(),
        },
    )?;
    static DEF: OnceLock<MethodDef> = OnceLock::new();
    let def = DEF.get_or_init(|| {
        MethodDef::new(
            c"labels",
            labels_vectorcall,
            c"labels(*labelvalues, **labelkwargs)\n--\n\nThe child of this label set.".into(),
        )
    });
    // SAFETY: `def` is a never freed `PyMethodDef` whose flags match its function; the new
    // function object takes its own reference to `state`.
    let function = unsafe { ffi::PyCFunction_NewEx(def.0, state.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: a new reference, or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, function) }
}

/// A leaked `METH_FASTCALL | METH_KEYWORDS` method definition (CPython keeps a pointer to
/// it in every function or descriptor made from it).
struct MethodDef(*mut ffi::PyMethodDef);

// SAFETY: written once before it is shared, only read after (by CPython).
unsafe impl Sync for MethodDef {}
// SAFETY: as above.
unsafe impl Send for MethodDef {}

impl MethodDef {
    fn new(name: &'static CStr, function: ffi::PyCFunctionFastWithKeywords, doc: CString) -> Self {
        Self(Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: function,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.into_raw(),
        })))
    }
}

/// A vectorcall's arguments: `all` holds the positional values, then one value per name
/// in `names`.
struct Arguments<'a, 'py> {
    all: &'a [*mut ffi::PyObject],
    positional: usize,
    names: Option<Borrowed<'a, 'py, PyAny>>,
}

impl<'a, 'py> Arguments<'a, 'py> {
    /// # Safety
    ///
    /// As CPython passes them to a `METH_FASTCALL | METH_KEYWORDS` function, with the GIL
    /// held: `args` holds `nargs` + len(`kwnames`) borrowed references valid for the call,
    /// `kwnames` is NULL or a tuple of names.
    unsafe fn new(
        py: Python<'py>,
        args: *const *mut ffi::PyObject,
        nargs: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> Self {
        let names = if kwnames.is_null() {
            None
        } else {
            // SAFETY: a non-NULL `kwnames` is a tuple (caller's contract).
            Some(unsafe { Borrowed::from_ptr(py, kwnames) })
        };
        let keywords = match names {
            // SAFETY: a tuple (caller's contract).
            Some(names) => unsafe { ffi::PyTuple_Size(names.as_ptr()) },
            None => 0,
        };
        let positional = usize::try_from(nargs).unwrap_or(0);
        let count = positional + usize::try_from(keywords).unwrap_or(0);
        let all = if count == 0 {
            &[][..]
        } else {
            // SAFETY: `count` borrowed references (caller's contract).
            unsafe { std::slice::from_raw_parts(args, count) }
        };
        Self {
            all,
            positional,
            names: names.filter(|_| keywords > 0),
        }
    }

    /// The positional values when no keyword was given.
    fn only_positional(&self) -> Option<&'a [*mut ffi::PyObject]> {
        self.names.is_none().then_some(self.all)
    }

    /// `callable(first, *positional, **keywords)`.
    fn call(
        &self,
        py: Python<'py>,
        callable: &Bound<'py, PyAny>,
        first: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: borrowed references valid for the call (`Arguments::new`).
        let value = |v: &*mut ffi::PyObject| unsafe { Bound::from_borrowed_ptr(py, *v) };
        let (by_position, by_name) = self.all.split_at(self.positional.min(self.all.len()));
        let mut args = Vec::with_capacity(by_position.len() + 1);
        args.push(first);
        args.extend(by_position.iter().map(value));
        let args = PyTuple::new(py, args)?;
        let kwargs = match self.names {
            None => None,
            Some(names) => {
                let dict = PyDict::new(py);
                for (name, v) in names.cast::<PyTuple>()?.iter().zip(by_name) {
                    dict.set_item(name.cast_into::<PyString>()?, value(v))?;
                }
                Some(dict)
            }
        };
        callable.call(args, kwargs.as_ref())
    }
}

/// The start of an entry point: `slf` and the arguments.
///
/// # Safety
///
/// As CPython calls a `METH_FASTCALL | METH_KEYWORDS` function: with the GIL held, `slf` a
/// valid object for the call (the function's `__self__`, or the object a method descriptor
/// was called on), the arguments as `Arguments::new` says.
unsafe fn enter<'a, 'py>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> (Borrowed<'a, 'py, PyAny>, Arguments<'a, 'py>) {
    // SAFETY: the GIL is held (caller's contract).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: valid for the call (caller's contract).
    let slf = unsafe { Borrowed::from_ptr(py, slf) };
    // SAFETY: caller's contract.
    (slf, unsafe { Arguments::new(py, args, nargs, kwnames) })
}

/// Runs an entry point's body: `fast` answers what it can with a new reference (no Python
/// code, no `Py` dropped), `slow` runs inside `Python::attach` and its error is raised; a
/// panic becomes a `RuntimeError` instead of unwinding into CPython.
fn entry_point(
    name: &CStr,
    fast: impl FnOnce() -> Option<*mut ffi::PyObject>,
    slow: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyAny>>,
) -> *mut ffi::PyObject {
    let result = catch_unwind(AssertUnwindSafe(|| {
        fast().unwrap_or_else(|| {
            Python::attach(|py| match slow(py) {
                Ok(result) => result.into_ptr(),
                Err(err) => {
                    err.restore(py);
                    std::ptr::null_mut()
                }
            })
        })
    }));
    result.unwrap_or_else(|_| {
        Python::attach(|py| {
            let name = name.to_string_lossy();
            PyRuntimeError::new_err(format!("internal error in shmetrics' {name}()")).restore(py);
        });
        std::ptr::null_mut()
    })
}

/// The entry point of `labels`.
///
/// # Safety
///
/// Only CPython calls it, through the definition `fast_labels` makes: with the GIL held,
/// `slf` the `FastLabels` the function was made with, and the arguments as
/// `Arguments::new` says.
unsafe extern "C" fn labels_vectorcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: this function's contract.
    let (slf, args) = unsafe { enter(slf, args, nargs, kwnames) };
    let py = slf.py();
    // SAFETY: `slf` is the `FastLabels` this function was made with (`fast_labels`).
    let state = unsafe { slf.cast_unchecked::<FastLabels>() }.get();
    entry_point(
        c"labels",
        || {
            let children = state.children.bind(py);
            Some(known(children, &state.recent, args.only_positional()?)?.into_ptr())
        },
        |py| {
            let Some(metric) = state.metric.bind(py).upgrade() else {
                return Err(PyReferenceError::new_err(
                    "the metric of this labels() method no longer exists",
                ));
            };
            args.call(py, state.fallback.bind(py), metric)
        },
    )
}

/// The child of a label set already in `children`, given as `values` by position.
pub(crate) fn known<'py>(
    children: &Bound<'py, PyDict>,
    recent: &Recent,
    values: &[*mut ffi::PyObject],
) -> Option<Bound<'py, PyAny>> {
    let py = children.py();
    if let Some(key) = recent.find(py, values) {
        if let Some(child) = get_item(children, &key) {
            return Some(child);
        }
        recent.forget(&key);
    }
    let key = new_tuple(py, values)?;
    let child = get_item(children, &key)?;
    // SAFETY: `values` are borrowed references (see `Arguments::new`).
    let all_str = values
        .iter()
        .all(|&v| unsafe { ffi::PyUnicode_CheckExact(v) } != 0);
    if all_str {
        recent.remember(key, values);
    }
    Some(child)
}

/// A PyO3 method of a native class replaced (by `install`) with a method descriptor over
/// `method_vectorcall`, which answers the common call itself and hands every other call to
/// the PyO3 method; that answers (and raises) exactly as before.
pub(crate) trait Replaced {
    /// The class whose method this is.
    type Class: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync;
    /// The method's name.
    const NAME: &'static CStr;
    /// Answers a call given only `values` by position, or returns `None` having done
    /// nothing (no Python code run, no `Py` dropped).
    fn fast<'py>(
        me: &Bound<'py, Self::Class>,
        values: &[*mut ffi::PyObject],
    ) -> Option<Bound<'py, PyAny>>;
    /// Where the replaced PyO3 method is kept.
    fn original() -> &'static PyOnceLock<Py<PyAny>>;
}

/// A write method's fast path: one exact `float` or `int` by position, or none where the
/// amount has a `default`; `write` does the method's work or declines.
pub(crate) fn fast_write<'py, C>(
    me: &Bound<'py, C>,
    values: &[*mut ffi::PyObject],
    default: Option<f64>,
    write: fn(&C, f64) -> bool,
) -> Option<Bound<'py, PyAny>>
where
    C: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    let amount = match values {
        [] => default?,
        [amount] => exact_number(*amount)?,
        _ => return None,
    };
    write(me.get(), amount).then(|| PyNone::get(me.py()).to_owned().into_any())
}

/// Defines the replaced methods of the native classes and `install_fast_methods`, which
/// installs them (invoked where the classes are defined, `metrics.rs`): each write method
/// with its default amount and its `try_` method, each class whose `labels` has a fast path.
macro_rules! fast_methods {
    (
        writes { $($write:ident: $wclass:ty, $wname:literal, $default:expr, $body:expr;)* }
        labels { $($labels:ident: $lclass:ty;)* }
    ) => {
        $(
            struct $write;
            impl $crate::fastcall::Replaced for $write {
                type Class = $wclass;
                const NAME: &'static ::std::ffi::CStr = $wname;
                fn fast<'py>(
                    me: &::pyo3::Bound<'py, $wclass>,
                    values: &[*mut ::pyo3::ffi::PyObject],
                ) -> Option<::pyo3::Bound<'py, ::pyo3::PyAny>> {
                    $crate::fastcall::fast_write(me, values, $default, $body)
                }
                fn original() -> &'static ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::PyAny>> {
                    static ORIGINAL: ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::PyAny>> =
                        ::pyo3::sync::PyOnceLock::new();
                    &ORIGINAL
                }
            }
        )*
        $(
            struct $labels;
            impl $crate::fastcall::Replaced for $labels {
                type Class = $lclass;
                const NAME: &'static ::std::ffi::CStr = c"labels";
                fn fast<'py>(
                    me: &::pyo3::Bound<'py, $lclass>,
                    values: &[*mut ::pyo3::ffi::PyObject],
                ) -> Option<::pyo3::Bound<'py, ::pyo3::PyAny>> {
                    let (children, recent) = me.get().node.parent()?;
                    $crate::fastcall::known(children.bind(me.py()), recent, values)
                }
                fn original() -> &'static ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::PyAny>> {
                    static ORIGINAL: ::pyo3::sync::PyOnceLock<::pyo3::Py<::pyo3::PyAny>> =
                        ::pyo3::sync::PyOnceLock::new();
                    &ORIGINAL
                }
            }
        )*
        /// Replaces the native classes' `labels` and write methods with their fast entry
        /// points (once, when the module is made).
        pub(crate) fn install_fast_methods(py: ::pyo3::Python<'_>) -> ::pyo3::PyResult<()> {
            $($crate::fastcall::install::<$write>(py)?;)*
            $($crate::fastcall::install::<$labels>(py)?;)*
            Ok(())
        }
    };
}

pub(crate) use fast_methods;

/// Replaces `R`'s PyO3 method with a method descriptor over `method_vectorcall::<R>`, with
/// the same signature and documentation.
pub(crate) fn install<R: Replaced>(py: Python<'_>) -> PyResult<()> {
    let class: Bound<'_, PyType> = py.get_type::<R::Class>();
    let name = R::NAME
        .to_str()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let original = class.getattr(name)?;
    let signature: Option<String> = original.getattr("__text_signature__")?.extract()?;
    let doc: Option<String> = original.getattr("__doc__")?.extract()?;
    let doc = format!(
        "{name}{}\n--\n\n{}",
        signature.unwrap_or_else(|| "($self, /, *args, **kwargs)".into()),
        doc.unwrap_or_default()
    );
    let doc = CString::new(doc).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    if R::original().set(py, original.unbind()).is_err() {
        return Ok(()); // already installed
    }
    let def = MethodDef::new(R::NAME, method_vectorcall::<R>, doc);
    // SAFETY: `def` is a never freed `PyMethodDef` whose flags match its function; `class`
    // is a valid type object.
    let descriptor = unsafe { ffi::PyDescr_NewMethod(class.as_type_ptr(), def.0) };
    // SAFETY: a new reference, or NULL with an exception set.
    let descriptor = unsafe { Bound::from_owned_ptr_or_err(py, descriptor) }?;
    class.setattr(name, descriptor)
}

/// The entry point of `R`'s method: `R::fast`, else the replaced PyO3 method.
///
/// # Safety
///
/// Only CPython calls it, through the descriptor `install` makes (which checks that `slf`
/// is an `R::Class`): with the GIL held and the arguments as `Arguments::new` says.
unsafe extern "C" fn method_vectorcall<R: Replaced>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: this function's contract.
    let (target, args) = unsafe { enter(slf, args, nargs, kwnames) };
    entry_point(
        R::NAME,
        || {
            // SAFETY: the method descriptor checked that `slf` is an `R::Class` (which Python
            // cannot subclass) before any call, bound or not, reaches this function.
            let me = unsafe { target.cast_unchecked::<R::Class>() };
            Some(R::fast(&me, args.only_positional()?)?.into_ptr())
        },
        |py| {
            let original = R::original()
                .get(py)
                .ok_or_else(|| PyRuntimeError::new_err("shmetrics: a method was not installed"))?;
            args.call(py, original.bind(py), target.to_owned())
        },
    )
}

/// The value of an exact `float` or `int` (as PyO3's `f64` conversion gives it), or `None`
/// for anything else and for an `int` too large (the method raises then).
fn exact_number(value: *mut ffi::PyObject) -> Option<f64> {
    // SAFETY: `value` is a borrowed reference valid for the call (`Arguments::new`).
    if unsafe { ffi::PyFloat_CheckExact(value) } != 0 {
        // SAFETY: an exact float: no Python code, no error.
        return Some(unsafe { ffi::PyFloat_AsDouble(value) });
    }
    // SAFETY: as above.
    if unsafe { ffi::PyLong_CheckExact(value) } == 0 {
        return None;
    }
    // SAFETY: an exact int: no Python code; -1.0 with an exception when out of range.
    let number = unsafe { ffi::PyLong_AsDouble(value) };
    // SAFETY: the GIL is held.
    if number == -1.0 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
        // SAFETY: the GIL is held; the method raises its own error for this value.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    Some(number)
}

/// `children[key]`, or `None` when absent; an error (an unhashable value) is cleared and
/// counts as absent (`prometheus_client`'s `labels` converts such values).
fn get_item<'py>(
    children: &Bound<'py, PyDict>,
    key: &Bound<'py, PyTuple>,
) -> Option<Bound<'py, PyAny>> {
    // SAFETY: both are valid objects.
    let child = unsafe { ffi::PyDict_GetItemWithError(children.as_ptr(), key.as_ptr()) };
    if child.is_null() {
        // SAFETY: the GIL is held; clears the lookup's error, if any.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    // SAFETY: a borrowed reference the dict holds, owned from here on.
    Some(unsafe { Bound::from_borrowed_ptr(children.py(), child) })
}

/// A new tuple of `values`, or `None` (error cleared) when it cannot be allocated.
fn new_tuple<'py>(py: Python<'py>, values: &[*mut ffi::PyObject]) -> Option<Bound<'py, PyTuple>> {
    let len = ffi::Py_ssize_t::try_from(values.len()).ok()?;
    // SAFETY: the GIL is held.
    let tuple = unsafe { ffi::PyTuple_New(len) };
    if tuple.is_null() {
        // SAFETY: the GIL is held; clears the allocation's error.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    // SAFETY: a new reference, owned from here on.
    let tuple = unsafe { Bound::from_owned_ptr(py, tuple) };
    // SAFETY: `PyTuple_New` made it a tuple.
    let tuple = unsafe { tuple.cast_into_unchecked::<PyTuple>() };
    for (index, &value) in (0..len).zip(values) {
        // SAFETY: `value` is a borrowed reference valid for this call (`labels_vectorcall`);
        // the new reference is stolen by the tuple below.
        unsafe { ffi::Py_INCREF(value) };
        // SAFETY: `index` is within the fresh tuple, whose slot is still empty.
        unsafe { ffi::PyTuple_SetItem(tuple.as_ptr(), index, value) };
    }
    Some(tuple)
}
