//! Power loss on purpose, for the fault tests (reliability.md T15), modelled on SQLite's own crash
//! tests (`src/test6.c`): a VFS over the default one that keeps every write in memory, as the OS page
//! cache would, until the file is synced. At the N-th sync of the process it simulates the machine
//! losing power: each write not yet synced is, at random, kept, dropped, or written as garbage, and
//! the process is killed on the spot. Whatever the daemon acknowledged before must then still be in
//! the file, and the file must be sound.
//!
//! It is bound at run time to the SQLite library Python's `sqlite3` module uses (`dlopen` of an
//! already-loaded library), not linked: the core stays free of a link-time SQLite, and a VFS
//! registered in another copy of SQLite would never be used. The sqlite3 structures below are the C
//! API's (sqlite3.h), as stable as the API.
//!
//! Writing early is always a possible outcome of a crash (the OS may write cached pages whenever it
//! likes), so a few operations simply write what is pending: truncating and closing a file.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The name connections open the database with (`file:...?vfs=durably-power-loss`).
pub const VFS_NAME: &CStr = c"durably-power-loss";

const SQLITE_OK: c_int = 0;
const SQLITE_IOERR_SHORT_READ: c_int = 10 | (2 << 8);

#[repr(C)]
struct File {
    methods: *const IoMethods,
}

type XClose = unsafe extern "C" fn(*mut File) -> c_int;
type XRead = unsafe extern "C" fn(*mut File, *mut c_void, c_int, i64) -> c_int;
type XWrite = unsafe extern "C" fn(*mut File, *const c_void, c_int, i64) -> c_int;
type XTruncate = unsafe extern "C" fn(*mut File, i64) -> c_int;
type XSync = unsafe extern "C" fn(*mut File, c_int) -> c_int;
type XFileSize = unsafe extern "C" fn(*mut File, *mut i64) -> c_int;
type XLock = unsafe extern "C" fn(*mut File, c_int) -> c_int;
type XCheckReservedLock = unsafe extern "C" fn(*mut File, *mut c_int) -> c_int;
type XFileControl = unsafe extern "C" fn(*mut File, c_int, *mut c_void) -> c_int;
type XSectorSize = unsafe extern "C" fn(*mut File) -> c_int;
type XShmMap = unsafe extern "C" fn(*mut File, c_int, c_int, c_int, *mut *mut c_void) -> c_int;
type XShmLock = unsafe extern "C" fn(*mut File, c_int, c_int, c_int) -> c_int;
type XShmBarrier = unsafe extern "C" fn(*mut File);
type XShmUnmap = unsafe extern "C" fn(*mut File, c_int) -> c_int;
type XFetch = unsafe extern "C" fn(*mut File, i64, c_int, *mut *mut c_void) -> c_int;
type XUnfetch = unsafe extern "C" fn(*mut File, i64, *mut c_void) -> c_int;

/// `sqlite3_io_methods`, version 3.
#[repr(C)]
struct IoMethods {
    version: c_int,
    close: Option<XClose>,
    read: Option<XRead>,
    write: Option<XWrite>,
    truncate: Option<XTruncate>,
    sync: Option<XSync>,
    file_size: Option<XFileSize>,
    lock: Option<XLock>,
    unlock: Option<XLock>,
    check_reserved_lock: Option<XCheckReservedLock>,
    file_control: Option<XFileControl>,
    sector_size: Option<XSectorSize>,
    device_characteristics: Option<XSectorSize>,
    shm_map: Option<XShmMap>,
    shm_lock: Option<XShmLock>,
    shm_barrier: Option<XShmBarrier>,
    shm_unmap: Option<XShmUnmap>,
    fetch: Option<XFetch>,
    unfetch: Option<XUnfetch>,
}

type XOpen = unsafe extern "C" fn(*mut Vfs, *const c_char, *mut File, c_int, *mut c_int) -> c_int;
type XDelete = unsafe extern "C" fn(*mut Vfs, *const c_char, c_int) -> c_int;

/// `sqlite3_vfs`: only the members this VFS replaces are typed; the others are copied from the
/// default VFS as they are.
#[repr(C)]
#[derive(Clone, Copy)]
struct Vfs {
    version: c_int,
    os_file_size: c_int,
    max_pathname: c_int,
    next: *mut Vfs,
    name: *const c_char,
    app_data: *mut c_void,
    open: Option<XOpen>,
    delete: Option<XDelete>,
    rest: [*const c_void; 14],
}

/// What SQLite allocates for each open file of this VFS: the default VFS's file lives beside it.
#[repr(C)]
struct CrashFile {
    base: File,
    real: *mut File,
    real_words: usize,
    /// The file's full path, the key of its writes not yet synced (null: a file without a name).
    path: *mut String,
}

/// A write the "OS" has not put on the disk yet.
struct Pending {
    offset: i64,
    data: Vec<u8>,
}

struct Simulation {
    crash_at_sync: u64,
    syncs: u64,
    random: u64,
    /// Path -> its writes since its last sync, in order: shared by every handle of the file, as the
    /// page cache is.
    pending: HashMap<String, Vec<Pending>>,
}

impl Simulation {
    /// xorshift64*: seeded, so a failing crash point can be run again.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

static SIMULATION: Mutex<Option<Simulation>> = Mutex::new(None);
/// The default VFS this one wraps (its address; registered VFS live as long as the process).
static BASE: OnceLock<usize> = OnceLock::new();

fn simulation() -> MutexGuard<'static, Option<Simulation>> {
    SIMULATION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn base_vfs() -> *mut Vfs {
    *BASE
        .get()
        .expect("power-loss VFS used before it was installed") as *mut Vfs
}

/// Register the VFS in the process's SQLite (`library`, already loaded, e.g. `libsqlite3.so.0`): the
/// `crash_at_sync`-th sync of any file opened through it (counted from 1) loses power. Returns the
/// VFS's name. Installing twice changes nothing but the crash point and the seed.
pub fn install(library: &str, crash_at_sync: u64, seed: u64) -> Result<&'static str, String> {
    *simulation() = Some(Simulation {
        crash_at_sync,
        syncs: 0,
        random: seed | 1,
        pending: HashMap::new(),
    });
    if BASE.get().is_some() {
        return Ok(name());
    }
    let lib = CString::new(library).map_err(|_| "the library name has a NUL byte".to_string())?;
    // SAFETY: dlopen/dlsym with valid C strings; RTLD_NOLOAD only finds a library already loaded.
    let (find, register) = unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return Err(format!(
                "{library} is not loaded in this process (is SQLite a shared library here?)"
            ));
        }
        let find = libc::dlsym(handle, c"sqlite3_vfs_find".as_ptr());
        let register = libc::dlsym(handle, c"sqlite3_vfs_register".as_ptr());
        if find.is_null() || register.is_null() {
            return Err(format!(
                "{library} has no sqlite3_vfs_find/sqlite3_vfs_register"
            ));
        }
        (
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_char) -> *mut Vfs>(
                find,
            ),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Vfs, c_int) -> c_int>(
                register,
            ),
        )
    };
    // SAFETY: the default VFS is registered for the life of the process; the copy is leaked likewise.
    unsafe {
        let base = find(ptr::null());
        if base.is_null() {
            return Err("SQLite has no default VFS".to_string());
        }
        let mut vfs = *base;
        vfs.os_file_size = std::mem::size_of::<CrashFile>() as c_int;
        vfs.name = VFS_NAME.as_ptr();
        vfs.next = ptr::null_mut();
        vfs.open = Some(open);
        vfs.delete = Some(delete);
        let _ = BASE.set(base as usize);
        if register(Box::into_raw(Box::new(vfs)), 0) != SQLITE_OK {
            return Err("sqlite3_vfs_register failed".to_string());
        }
    }
    Ok(name())
}

fn name() -> &'static str {
    VFS_NAME.to_str().expect("the VFS name is ASCII")
}

static METHODS: IoMethods = IoMethods {
    version: 3,
    close: Some(close),
    read: Some(read),
    write: Some(write),
    truncate: Some(truncate),
    sync: Some(sync),
    file_size: Some(file_size),
    lock: Some(lock),
    unlock: Some(unlock),
    check_reserved_lock: Some(check_reserved_lock),
    file_control: Some(file_control),
    sector_size: Some(sector_size),
    device_characteristics: Some(device_characteristics),
    shm_map: Some(shm_map),
    shm_lock: Some(shm_lock),
    shm_barrier: Some(shm_barrier),
    shm_unmap: Some(shm_unmap),
    fetch: Some(fetch),
    unfetch: Some(unfetch),
};

/// The default VFS's file and its methods.
unsafe fn real(file: *mut File) -> (*mut File, &'static IoMethods) {
    // SAFETY: `file` is one of ours (SQLite only calls METHODS on files `open` made).
    unsafe {
        let real = (*(file as *mut CrashFile)).real;
        (real, &*(*real).methods)
    }
}

unsafe fn path_of(file: *mut File) -> Option<&'static str> {
    // SAFETY: as for `real`; the path lives until `close`.
    unsafe {
        let path = (*(file as *mut CrashFile)).path;
        if path.is_null() {
            None
        } else {
            Some((*path).as_str())
        }
    }
}

unsafe extern "C" fn open(
    vfs: *mut Vfs,
    name: *const c_char,
    file: *mut File,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let _ = vfs;
    // SAFETY: SQLite gives `file` os_file_size bytes; the default VFS's file gets its own allocation.
    unsafe {
        let base = base_vfs();
        let words = ((*base).os_file_size as usize).div_ceil(8).max(1);
        let real = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut File;
        let crash = file as *mut CrashFile;
        let rc = ((*base).open.expect("the default VFS opens files"))(base, name, real, flags, out);
        if rc != SQLITE_OK {
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                real as *mut u64,
                words,
            )));
            (*crash).base.methods = ptr::null();
            return rc;
        }
        let path = if name.is_null() {
            ptr::null_mut()
        } else {
            Box::into_raw(Box::new(
                CStr::from_ptr(name).to_string_lossy().into_owned(),
            ))
        };
        ptr::write(
            crash,
            CrashFile {
                base: File { methods: &METHODS },
                real,
                real_words: words,
                path,
            },
        );
        SQLITE_OK
    }
}

unsafe extern "C" fn delete(vfs: *mut Vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    let _ = vfs;
    // SAFETY: `name` is a path SQLite passes as a C string.
    unsafe {
        if !name.is_null() {
            let path = CStr::from_ptr(name).to_string_lossy();
            if let Some(sim) = simulation().as_mut() {
                sim.pending.remove(path.as_ref());
            }
        }
        let base = base_vfs();
        ((*base).delete.expect("the default VFS deletes files"))(base, name, sync_dir)
    }
}

/// Put the file's pending writes in the real file (without a sync): the OS wrote its cache.
unsafe fn write_pending(file: *mut File, sim: &mut Simulation) -> c_int {
    // SAFETY: `file` is ours.
    unsafe {
        let Some(path) = path_of(file) else {
            return SQLITE_OK;
        };
        let Some(writes) = sim.pending.remove(path) else {
            return SQLITE_OK;
        };
        let (real, methods) = real(file);
        for w in writes {
            let rc = (methods.write.expect("write"))(
                real,
                w.data.as_ptr() as *const c_void,
                w.data.len() as c_int,
                w.offset,
            );
            if rc != SQLITE_OK {
                return rc;
            }
        }
        SQLITE_OK
    }
}

unsafe extern "C" fn close(file: *mut File) -> c_int {
    // SAFETY: `file` is ours and is not used again after this.
    unsafe {
        if let Some(sim) = simulation().as_mut() {
            write_pending(file, sim);
        }
        let crash = file as *mut CrashFile;
        let (real, methods) = real(file);
        let rc = (methods.close.expect("close"))(real);
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
            real as *mut u64,
            (*crash).real_words,
        )));
        if !(*crash).path.is_null() {
            drop(Box::from_raw((*crash).path));
        }
        rc
    }
}

unsafe extern "C" fn read(file: *mut File, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: `buf` holds `amount` bytes (SQLite's contract); `file` is ours.
    unsafe {
        let guard = simulation();
        let (real, methods) = real(file);
        let rc = (methods.read.expect("read"))(real, buf, amount, offset);
        let writes = match (guard.as_ref(), path_of(file)) {
            (Some(sim), Some(path)) => sim.pending.get(path),
            _ => None,
        };
        let Some(writes) = writes.filter(|w| !w.is_empty()) else {
            return rc;
        };
        if rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ {
            return rc;
        }
        let out = std::slice::from_raw_parts_mut(buf as *mut u8, amount as usize);
        overlay(out, offset, writes);
        let mut size = 0i64;
        (methods.file_size.expect("file_size"))(real, &mut size);
        if offset + amount as i64 <= size.max(furthest_end(writes)) {
            SQLITE_OK
        } else {
            SQLITE_IOERR_SHORT_READ
        }
    }
}

/// Put into `out`, read from the disk at `offset`, what `writes` (in order: a later one wins) hold of it.
fn overlay(out: &mut [u8], offset: i64, writes: &[Pending]) {
    let end = offset + out.len() as i64;
    for w in writes {
        let (from, to) = (
            offset.max(w.offset),
            end.min(w.offset + w.data.len() as i64),
        );
        if from < to {
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&w.data[(from - w.offset) as usize..(to - w.offset) as usize]);
        }
    }
}

/// Where the furthest of `writes` ends: the file's size as the page cache sees it, if past the disk's.
fn furthest_end(writes: &[Pending]) -> i64 {
    writes
        .iter()
        .map(|w| w.offset + w.data.len() as i64)
        .max()
        .unwrap_or(0)
}

unsafe extern "C" fn write(
    file: *mut File,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: `buf` holds `amount` bytes; `file` is ours.
    unsafe {
        let mut guard = simulation();
        match (guard.as_mut(), path_of(file)) {
            (Some(sim), Some(path)) => {
                let data = std::slice::from_raw_parts(buf as *const u8, amount as usize).to_vec();
                sim.pending
                    .entry(path.to_string())
                    .or_default()
                    .push(Pending { offset, data });
                SQLITE_OK
            }
            _ => {
                let (real, methods) = real(file);
                (methods.write.expect("write"))(real, buf, amount, offset)
            }
        }
    }
}

unsafe extern "C" fn truncate(file: *mut File, size: i64) -> c_int {
    // SAFETY: `file` is ours.
    unsafe {
        if let Some(sim) = simulation().as_mut() {
            let rc = write_pending(file, sim);
            if rc != SQLITE_OK {
                return rc;
            }
        }
        let (real, methods) = real(file);
        (methods.truncate.expect("truncate"))(real, size)
    }
}

unsafe extern "C" fn sync(file: *mut File, flags: c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe {
        let mut guard = simulation();
        if let Some(sim) = guard.as_mut() {
            sim.syncs += 1;
            if sim.syncs == sim.crash_at_sync {
                lose_power(sim);
            }
            let rc = write_pending(file, sim);
            if rc != SQLITE_OK {
                return rc;
            }
        }
        let (real, methods) = real(file);
        (methods.sync.expect("sync"))(real, flags)
    }
}

/// Each unsynced write is kept, dropped or written as garbage (a third of the time each), then the
/// process dies as a machine without power would: no cleanup, no SQLite call after this.
fn lose_power(sim: &mut Simulation) -> ! {
    let (mut kept, mut dropped, mut garbled) = (0u64, 0u64, 0u64);
    let pending = std::mem::take(&mut sim.pending);
    for (path, writes) in pending {
        let Ok(disk) = OpenOptions::new().write(true).open(&path) else {
            dropped += writes.len() as u64;
            continue;
        };
        for mut w in writes {
            match sim.next_random() % 3 {
                0 => kept += 1,
                1 => {
                    dropped += 1;
                    continue;
                }
                _ => {
                    garbled += 1;
                    for byte in w.data.iter_mut() {
                        *byte = sim.next_random() as u8;
                    }
                }
            }
            let _ = disk.write_all_at(&w.data, w.offset as u64);
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "durably: power lost on purpose at sync {} ($DURABLY_STORE_POWER_LOSS): unsynced writes: {kept} kept, \
         {dropped} dropped, {garbled} garbled",
        sim.syncs
    );
    // SAFETY: plain libc calls; the process ends here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
        libc::_exit(137)
    }
}

unsafe extern "C" fn file_size(file: *mut File, size: *mut i64) -> c_int {
    // SAFETY: `size` is SQLite's out-parameter; `file` is ours.
    unsafe {
        let guard = simulation();
        let (real, methods) = real(file);
        let rc = (methods.file_size.expect("file_size"))(real, size);
        if let (Some(sim), Some(path), SQLITE_OK) = (guard.as_ref(), path_of(file), rc) {
            let writes = sim.pending.get(path).map_or(&[][..], Vec::as_slice);
            *size = (*size).max(furthest_end(writes));
        }
        rc
    }
}

unsafe extern "C" fn lock(file: *mut File, level: c_int) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (real, methods) = real(file);
        (methods.lock.expect("lock"))(real, level)
    }
}

unsafe extern "C" fn unlock(file: *mut File, level: c_int) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.unlock.expect("unlock"))(real, level)
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut File, out: *mut c_int) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.check_reserved_lock.expect("check_reserved_lock"))(real, out)
    }
}

unsafe extern "C" fn file_control(file: *mut File, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.file_control.expect("file_control"))(real, op, arg)
    }
}

unsafe extern "C" fn sector_size(file: *mut File) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.sector_size.expect("sector_size"))(real)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut File) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods
            .device_characteristics
            .expect("device_characteristics"))(real)
    }
}

unsafe extern "C" fn shm_map(
    file: *mut File,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: as `lock`; the WAL index is shared memory, not durable, so it is not simulated.
    unsafe {
        let (real, methods) = real(file);
        (methods.shm_map.expect("shm_map"))(real, page, size, extend, out)
    }
}

unsafe extern "C" fn shm_lock(file: *mut File, offset: c_int, n: c_int, flags: c_int) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.shm_lock.expect("shm_lock"))(real, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut File) {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.shm_barrier.expect("shm_barrier"))(real)
    }
}

unsafe extern "C" fn shm_unmap(file: *mut File, delete: c_int) -> c_int {
    // SAFETY: as `lock`.
    unsafe {
        let (real, methods) = real(file);
        (methods.shm_unmap.expect("shm_unmap"))(real, delete)
    }
}

/// No memory-mapped pages: every read must see the writes held back.
unsafe extern "C" fn fetch(
    file: *mut File,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let _ = (file, offset, amount);
    // SAFETY: `out` is SQLite's out-parameter.
    unsafe { *out = ptr::null_mut() };
    SQLITE_OK
}

unsafe extern "C" fn unfetch(file: *mut File, offset: i64, page: *mut c_void) -> c_int {
    let _ = (file, offset, page);
    SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(offset: i64, data: &[u8]) -> Pending {
        Pending {
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_read_sees_the_unsynced_writes_over_the_disk_the_later_one_winning() {
        let mut out = *b"disk-disk-";
        let writes = [pending(2, b"AAAA"), pending(4, b"BB"), pending(8, b"CCCC")];
        overlay(&mut out, 0, &writes);
        assert_eq!(&out, b"diAABBisCC");
    }

    #[test]
    fn a_read_at_an_offset_takes_only_its_part_of_each_write() {
        let mut out = *b"....";
        overlay(
            &mut out,
            10,
            &[pending(8, b"xxyy"), pending(13, b"zz"), pending(20, b"far")],
        );
        assert_eq!(&out, b"yy.z");
    }

    #[test]
    fn the_file_ends_where_its_furthest_unsynced_write_does() {
        assert_eq!(furthest_end(&[]), 0);
        assert_eq!(furthest_end(&[pending(4096, b"x"), pending(0, b"y")]), 4097);
    }
}
