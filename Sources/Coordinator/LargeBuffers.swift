import CMalloc
import Foundation

/// The coordinator's memory is what it holds, not the history of what it held.
///
/// Each step the coordinator allocates and frees several buffers the size of the trainable set: the
/// workers' result frames, their decoded records, the exact sum, the scaled gradient, the new
/// parameters. glibc serves a first large block with its own mapping, but after freeing one it raises
/// its mapping threshold to that block's size (up to 32 MiB), so later blocks come from heaps that keep
/// what is freed, one heap per thread that allocates, fragmented by the order results happened to
/// arrive in. The peak then depends on timing: a job with 2.9M trainable parameters peaked at 208-250 MB
/// in seven runs. With the threshold fixed, a block of 1 MiB or more is mapped when allocated and
/// unmapped when freed, so the peak is the live data `coordinator plan` adds up: 191-194 MB in every run
/// (CoordinatorMemoryTests). The price is fresh pages for every new block, which the kernel zero-fills:
/// at 2.9M parameters the exact sum + AdamW went from 80 to 120 ms a step here, beside steps of 30 s and
/// more at the model sizes that have that many. Blocks under 1 MiB (every tensor of the demo) are served
/// as before.
enum LargeBuffers {
    static let threshold: Int32 = 1 << 20

    /// Called once, before the run allocates: only by a coordinator that computes nothing itself (the
    /// engine's workspaces, in-process, are allocated once and reused).
    static func returnToKernelWhenFreed() {
        _ = mallopt(M_MMAP_THRESHOLD, threshold)
    }
}
