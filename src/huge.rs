//! Read-only arrays on huge pages, for the indexes that lookups hop through at random.

/// A read-only array in one allocation that, when large, is aligned to 2 MiB and backed by
/// huge pages where the kernel allows.
///
/// A lookup touches a handful of entries scattered over tens of megabytes; with 4 KiB pages
/// nearly each of them also misses the TLB. Linux only hands out huge pages to regions that
/// ask (`madvise`), and only when they are first touched, and only for whole aligned 2 MiB
/// pages; so the array is copied into a fresh allocation, aligned and rounded up to 2 MiB,
/// advised before the copy touches it. Elsewhere, or if the kernel says no, nothing changes.
pub struct HugeArray<T: Copy> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the array owns its items (plain `Copy` data, `Send` and `Sync` themselves) and
// hands out only shared references.
unsafe impl<T: Copy + Send> Send for HugeArray<T> {}
unsafe impl<T: Copy + Sync> Sync for HugeArray<T> {}

impl<T: Copy> HugeArray<T> {
    const HUGE: usize = 2 << 20;

    pub fn new(items: &[T]) -> Self {
        let bytes = std::mem::size_of_val(items).max(1);
        let layout = if bytes >= 2 * Self::HUGE {
            std::alloc::Layout::from_size_align(bytes.next_multiple_of(Self::HUGE), Self::HUGE)
        } else {
            std::alloc::Layout::from_size_align(bytes, std::mem::align_of::<T>())
        }
        .expect("a huge array's layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) }.cast::<T>();
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        if layout.align() == Self::HUGE {
            // SAFETY: the whole aligned range is this allocation; MADV_HUGEPAGE is advice on
            // how to back it and changes no contents.
            unsafe {
                libc::madvise(raw.cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: the allocation holds `items.len()` items and does not overlap `items`.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), raw, items.len()) };
        Self {
            ptr,
            len: items.len(),
            layout,
        }
    }

    pub fn bytes(&self) -> usize {
        self.layout.size()
    }
}

impl<T: Copy> std::ops::Deref for HugeArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` items were written at `ptr` by `new`, and the array owns them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout) }
    }
}

impl<T: Copy> Clone for HugeArray<T> {
    fn clone(&self) -> Self {
        Self::new(self)
    }
}

impl<T: Copy> std::fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeArray({} items)", self.len)
    }
}
