// runtime.cc: the CUDA emulator's scheduler and memory checker (tests/cuda_emulator).
//
// A kernel .so (a kernels/*.cu file built by build.py) is compiled with
// -fsanitize=thread as INSTRUMENTATION ONLY: every load and store in kernel code calls
// __tsan_readN / __tsan_writeN. Instead of ThreadSanitizer's runtime, this file defines
// those hooks, and checks each access before it happens. This file itself is compiled
// without instrumentation.
//
// One launch (emu_launch) runs the blocks one after another. Inside a block, every CUDA
// thread is a fiber (ucontext) with its own stack; the scheduler resumes a random
// runnable fiber (seeded), and a fiber runs until it reaches __syncthreads(), a warp
// shuffle, its end, or (now and then, at random) a memory access. So the threads of a
// block interleave in a different order on every seed.
//
// Checks, each of which abandons the launch before the faulty access happens:
//   bounds     an access must fall inside one argument array (exact byte range), a
//              __shared__ variable, the launch's parameters (read only) or the running
//              fiber's own stack; a write to a `const T*` argument is refused too.
//   races      every byte of shared memory, and every 4-byte granule of the argument
//              arrays, remembers its last writer and reader and when they accessed it.
//              Two threads touching the same location with at least one write, in the same
//              barrier interval of a block or from different blocks, is a race: a missing
//              __syncthreads() fails deterministically, whatever order the fibers ran in.
//   shared     __shared__ memory is filled with 0xFF (NaN) at every block start, and a
//              read of a byte no thread of the block has written is an error.
//   barriers   every thread that has not exited must reach the same __syncthreads();
//              a thread that exits or waits at another barrier is an error.
//   shuffles   every lane named in the mask must take part, with the same mask; a lane
//              that has exited or does not exist is an error.
//   traps      UBSan checks compiled in trap mode raise SIGILL; the handler (on an
//              alternate stack) jumps back to emu_launch, which reports the error. So do
//              SIGSEGV (a fiber stack overflow hits a guard page), SIGBUS and SIGFPE.
//
// Counting mode (spec->count_traffic, off unless asked for): every access to an argument
// array or __shared__ variable is also recorded with its warp, its instruction (the hook's
// return address) and how many times this lane has executed that instruction before. At
// the end of each block, the records of one warp-level instruction (same warp, same
// instruction, same dynamic occurrence: the lanes a GPU would issue together) make one
// request: for global memory, the distinct 32-byte sectors it touches; for shared memory,
// the wavefronts its 32 banks of 4 bytes need. See struct Traffic.
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <map>
#include <unordered_map>
#include <string>
#include <tuple>
#include <vector>

struct uint3 {
    unsigned int x, y, z;
};

// A memory range a kernel may touch, described by Python: an argument array or a
// __shared__ variable. `name` says what it is in error messages.
struct emu_region {
    uint64_t lo, hi;
    int writable;
    const char* name;
    uint64_t origin;  // the start of the allocation it lies in: sectors count from there
};

struct emu_launch_spec {
    void (*entry)(const unsigned long long* slots);  // the body of one thread
    const char* kernel;                               // name<T>, for messages
    unsigned int grid[3], block[3];
    const unsigned long long* params;                 // one 8-byte slot per parameter
    int nparams;
    const emu_region* buffers;                        // the array arguments
    int nbuffers;
    const emu_region* shared;                         // the module's __shared__ variables
    int nshared;
    uint64_t seed;
    unsigned int yield_one_in;  // a fiber yields at a memory access with chance 1/N (0: never)
    int count_traffic;          // 1: record every access for the counting mode
};

// Counting mode: one warp-level memory instruction, summed over the launch.
struct emu_instruction_counts {
    uint64_t pc;         // the hook's return address in the kernel module
    int kind;            // 0 global load, 1 global store, 2 shared load, 3 shared store
    uint64_t requests;   // warp-level executions
    uint64_t lanes;      // lane accesses (active lanes summed over the requests)
    uint64_t bytes;      // bytes the lanes asked for
    uint64_t sectors;    // global: distinct 32-byte sectors, summed over the requests
    uint64_t wavefronts; // shared: passes through the 32 banks, summed over the requests
    uint64_t ideal_wavefronts;  // shared: the passes without bank conflicts
};

// Counting mode: the distinct 32-byte sectors of one array (or __shared__ variable) that
// the launch read and wrote: the traffic if every sector were fetched or stored once.
struct emu_region_counts {
    uint64_t read_sectors, written_sectors;
};

namespace {

const int kWarpSize = 32;
const int kMaxThreads = 1024;
const int kMaxParams = 64;
const size_t kStackBytes = 128 * 1024;
const size_t kGuardBytes = 4096;
const uint32_t kSeveralReaders = 0xFFFFFFFFu;

enum class State { runnable, at_barrier, at_shuffle, exited };

// What one lane brought to a warp shuffle.
struct ShuffleRequest {
    int kind;
    unsigned int mask;
    unsigned long long bits;
    int lane_argument;
    int width;
};

struct Fiber {
    ucontext_t context;
    State state;
    uint3 index;      // threadIdx
    int linear;       // x + y*bx + z*bx*by: the lane is linear % 32, the warp linear / 32
    char* stack_lo;
    char* stack_hi;
    uint64_t barrier;  // where it waits at __syncthreads(): the return address of the call
    ShuffleRequest shuffle;
};

// Who last touched a location (a byte of shared memory, 4 bytes of an argument array),
// and in which barrier interval ("epoch"). Thread ids are 1 + the global thread index.
struct Cell {
    uint32_t writer, write_epoch;
    uint32_t reader, read_epoch;  // reader: kSeveralReaders if two threads read in read_epoch
    uint32_t first_read_epoch;
};

struct Region {
    uint64_t lo, hi;
    bool writable;
    const char* name;
    bool shared;
    int granule_shift;  // log2 of the bytes per Cell
    std::vector<Cell> cells;
    uint64_t origin;    // sectors (and shared banks) count from here
};

// The counting mode's records and results (see the comment at the top).
enum Kind { kGlobalLoad = 0, kGlobalStore = 1, kSharedLoad = 2, kSharedStore = 3 };

struct AccessRecord {
    uint64_t pc;
    uint64_t offset;      // from the region's origin (global) or start (shared)
    uint32_t occurrence;  // how many times this lane executed this instruction before
    uint32_t region;
    uint16_t warp;
    uint8_t lane, kind;
    uint32_t size;
};

struct Traffic {
    std::vector<AccessRecord> records;                          // of the block running
    std::vector<std::unordered_map<uint64_t, uint32_t>> seen;   // per thread: pc*2+write -> count
    std::map<std::pair<uint64_t, int>, emu_instruction_counts> instructions;  // (pc, kind)
    std::vector<std::vector<uint8_t>> sectors;  // per region, per sector: 1 read, 2 written
};

struct Launch {
    const emu_launch_spec* spec;
    std::vector<Region> regions;
    unsigned long long params[kMaxParams];
    uint3 block_index;
    int threads;          // per block
    uint32_t epoch;       // increases at every block start and every barrier
    uint32_t block_first_epoch;
    uint32_t thread_base; // 1 + the global index of the block's thread 0
    uint64_t rng;
    ucontext_t scheduler;
    sigjmp_buf abandon;   // where a failing check or a trap jumps back to
    std::vector<int> runnable;
    std::string error;
    uint64_t error_pc;
    Traffic* traffic;     // null unless the counting mode is on
};

Launch* current = nullptr;  // the launch in progress, if any
Fiber* running = nullptr;   // the fiber being executed, null while the scheduler runs
std::vector<Fiber> fibers;
char* stack_pool = nullptr;
size_t stack_pool_count = 0;
std::string last_error;
uint64_t last_error_pc = 0;
uint64_t access_count = 0;
std::vector<emu_instruction_counts> counted_instructions;  // the last counted launch's
std::vector<emu_region_counts> counted_regions;
char signal_stack[64 * 1024];

uint64_t next_random(uint64_t& state)  // xorshift64*: cheap, reproducible from the seed
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

uint3 unflatten(long long linear, const unsigned int* dims)
{
    uint3 index;
    index.x = (unsigned int)(linear % dims[0]);
    index.y = (unsigned int)(linear / dims[0] % dims[1]);
    index.z = (unsigned int)(linear / ((long long)dims[0] * dims[1]));
    return index;
}

std::string where(const Fiber* fiber)
{
    char text[160];
    const uint3& b = current->block_index;
    if (fiber == nullptr) {
        snprintf(text, sizeof text, "%s, block (%u,%u,%u)", current->spec->kernel, b.x, b.y, b.z);
    } else {
        snprintf(text, sizeof text, "%s, block (%u,%u,%u), thread (%u,%u,%u)",
                 current->spec->kernel, b.x, b.y, b.z, fiber->index.x, fiber->index.y,
                 fiber->index.z);
    }
    return text;
}

// Record the error and leave the launch: nothing after the faulty operation runs.
[[noreturn]] void fail(uint64_t pc, const char* format, ...)
{
    char text[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    current->error = where(running) + ": " + text;
    current->error_pc = pc;
    siglongjmp(current->abandon, 1);
}

// Hand control back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler()
{
    swapcontext(&running->context, &current->scheduler);
}

std::string thread_name(uint32_t id)
{
    if (id == kSeveralReaders) {
        return "several threads";
    }
    const long long global = (long long)id - 1;
    const long long per_block = current->threads;
    const uint3 t = unflatten(global % per_block, current->spec->block);
    const uint3 b = unflatten(global / per_block, current->spec->grid);
    char text[96];
    snprintf(text, sizeof text, "thread (%u,%u,%u) of block (%u,%u,%u)", t.x, t.y, t.z, b.x, b.y,
             b.z);
    return text;
}

// True when an earlier access by `other` in `epoch` may run concurrently with the running
// thread's: another thread, and either another block or the same barrier interval.
bool concurrent(uint32_t other, uint32_t epoch, uint32_t me)
{
    if (other == 0 || other == me) {
        return false;
    }
    return epoch < current->block_first_epoch || epoch == current->epoch;
}

void check_cell(Region& region, Cell& cell, uint64_t address, bool is_write, uint32_t me,
                uint64_t pc)
{
    const char* access = is_write ? "writes" : "reads";
    const unsigned long long offset = (unsigned long long)(address - region.lo);
    if (concurrent(cell.writer, cell.write_epoch, me)) {
        fail(pc, "race: %s byte %llu of %s, which %s wrote %s", access, offset, region.name,
             thread_name(cell.writer).c_str(),
             cell.write_epoch < current->block_first_epoch
                 ? "(blocks are never ordered within a launch)"
                 : "with no __syncthreads() between");
    }
    if (is_write) {
        if (cell.first_read_epoch != 0 && cell.first_read_epoch < current->block_first_epoch) {
            fail(pc, "race: writes byte %llu of %s, which a thread of another block read (blocks "
                     "are never ordered within a launch)",
                 offset, region.name);
        }
        if (cell.read_epoch == current->epoch && cell.reader != 0 && cell.reader != me) {
            fail(pc, "race: writes byte %llu of %s, which %s read with no __syncthreads() between",
                 offset, region.name, thread_name(cell.reader).c_str());
        }
        cell.writer = me;
        cell.write_epoch = current->epoch;
        return;
    }
    if (region.shared && cell.write_epoch == 0) {
        fail(pc, "reads byte %llu of %s, which no thread of this block has written yet",
             offset, region.name);
    }
    if (cell.first_read_epoch == 0) {
        cell.first_read_epoch = current->epoch;
    }
    if (cell.read_epoch != current->epoch) {
        cell.reader = me;
        cell.read_epoch = current->epoch;
    } else if (cell.reader != me) {
        cell.reader = kSeveralReaders;
    }
}

// Where an address lies relative to the closest region, for out-of-bounds messages.
std::string nearest_region(uint64_t address)
{
    const Region* best = nullptr;
    uint64_t best_distance = UINT64_MAX;
    for (const Region& r : current->regions) {
        const uint64_t d = address < r.lo    ? r.lo - address
                           : address >= r.hi ? address - r.hi + 1
                                             : 0;
        if (d < best_distance) {
            best_distance = d;
            best = &r;
        }
    }
    if (best == nullptr) {
        return "the kernel has no array arguments";
    }
    char text[512];
    snprintf(text, sizeof text, "the nearest is %s, and this is its byte %lld of %llu", best->name,
             (long long)(address - best->lo), (unsigned long long)(best->hi - best->lo));
    return text;
}

// --- the counting mode -------------------------------------------------------------------

const int kSectorShift = 5;  // 32-byte sectors of global memory
const int kBanks = 32;       // shared memory: 32 banks of 4 bytes
const int kBankBytes = 4;
const int kWavefrontBytes = kBanks * kBankBytes;

void record_access(uint32_t index, const Region& region, uint64_t lo, size_t size,
                   bool is_write, uint64_t pc)
{
    Traffic& traffic = *current->traffic;
    uint32_t& seen = traffic.seen[running->linear][pc * 2 + is_write];
    AccessRecord r;
    r.pc = pc;
    r.offset = lo - region.origin;
    r.occurrence = seen++;
    r.region = index;
    r.warp = (uint16_t)(running->linear / kWarpSize);
    r.lane = (uint8_t)(running->linear % kWarpSize);
    r.kind = (uint8_t)((region.shared ? kSharedLoad : kGlobalLoad) + is_write);
    r.size = (uint32_t)size;
    traffic.records.push_back(r);
    std::vector<uint8_t>& marks = traffic.sectors[index];
    const uint64_t first = (region.lo - region.origin) >> kSectorShift;
    for (uint64_t s = r.offset >> kSectorShift; s <= (r.offset + size - 1) >> kSectorShift; ++s) {
        marks[s - first] |= is_write ? 2 : 1;
    }
}

// One warp-level request of global memory: the distinct 32-byte sectors its lanes touch.
uint64_t sectors_of(const AccessRecord* lanes, size_t count, std::vector<uint64_t>& scratch)
{
    scratch.clear();
    for (size_t i = 0; i < count; ++i) {
        const AccessRecord& r = lanes[i];
        for (uint64_t s = r.offset >> kSectorShift; s <= (r.offset + r.size - 1) >> kSectorShift;
             ++s) {
            scratch.push_back((uint64_t)r.region << 48 | s);
        }
    }
    std::sort(scratch.begin(), scratch.end());
    return (uint64_t)(std::unique(scratch.begin(), scratch.end()) - scratch.begin());
}

// One warp-level request of shared memory: the hardware serves it in phases of 128 bytes
// of lanes (the whole warp for 4-byte accesses, each half-warp for 8-byte ones, each
// quarter for 16-byte ones); a phase needs as many wavefronts as the most distinct 4-byte
// words any one bank holds (lanes reading the same word share it: a broadcast).
// Adds (wavefronts, ideal wavefronts) to `out`.
void wavefronts_of(const AccessRecord* lanes, size_t count, std::vector<uint64_t>& scratch,
                   emu_instruction_counts& out)
{
    uint32_t widest = 1;
    for (size_t i = 0; i < count; ++i) {
        widest = std::max(widest, lanes[i].size);
    }
    const int lanes_per_phase =
        std::max(1, kWavefrontBytes / (int)std::max<uint32_t>(widest, kBankBytes));
    for (int phase = 0; phase * lanes_per_phase < kWarpSize; ++phase) {
        scratch.clear();
        for (size_t i = 0; i < count; ++i) {
            const AccessRecord& r = lanes[i];
            if (r.lane / lanes_per_phase != phase) {
                continue;
            }
            for (uint64_t w = r.offset / kBankBytes; w <= (r.offset + r.size - 1) / kBankBytes; ++w) {
                scratch.push_back((uint64_t)r.region << 48 | w);
            }
        }
        if (scratch.empty()) {
            continue;
        }
        std::sort(scratch.begin(), scratch.end());
        const size_t words = std::unique(scratch.begin(), scratch.end()) - scratch.begin();
        int per_bank[kBanks] = {0};
        int most = 0;
        for (size_t i = 0; i < words; ++i) {
            most = std::max(most, ++per_bank[scratch[i] % kBanks]);
        }
        out.wavefronts += most;
        out.ideal_wavefronts += (words + kBanks - 1) / kBanks;
    }
}

// At the end of a block: group its records into warp-level requests and count them.
void count_block_traffic()
{
    Traffic& traffic = *current->traffic;
    std::vector<AccessRecord>& records = traffic.records;
    std::sort(records.begin(), records.end(), [](const AccessRecord& a, const AccessRecord& b) {
        return std::tie(a.kind, a.pc, a.warp, a.occurrence, a.lane) <
               std::tie(b.kind, b.pc, b.warp, b.occurrence, b.lane);
    });
    std::vector<uint64_t> scratch;
    for (size_t i = 0; i < records.size();) {
        size_t j = i + 1;
        while (j < records.size() && records[j].kind == records[i].kind &&
               records[j].pc == records[i].pc && records[j].warp == records[i].warp &&
               records[j].occurrence == records[i].occurrence) {
            ++j;
        }
        emu_instruction_counts& counts = traffic.instructions[{records[i].pc, records[i].kind}];
        counts.pc = records[i].pc;
        counts.kind = records[i].kind;
        counts.requests += 1;
        counts.lanes += j - i;
        for (size_t k = i; k < j; ++k) {
            counts.bytes += records[k].size;
        }
        if (records[i].kind <= kGlobalStore) {
            counts.sectors += sectors_of(&records[i], j - i, scratch);
        } else {
            wavefronts_of(&records[i], j - i, scratch, counts);
        }
        i = j;
    }
    records.clear();
    for (auto& seen : traffic.seen) {
        seen.clear();
    }
}

// The check behind every instrumented load and store of kernel code.
void check_access(const void* pointer, size_t size, bool is_write, uint64_t pc)
{
    if (current == nullptr || running == nullptr) {
        return;  // outside a launch (module constructors, describing signatures)
    }
    ++access_count;
    const uint64_t lo = (uint64_t)pointer;
    const uint64_t hi = lo + size;
    const char* access = is_write ? "writes" : "reads";
    if (lo >= (uint64_t)running->stack_lo && hi <= (uint64_t)running->stack_hi) {
        return;  // the thread's own local variables
    }
    const uint64_t params_lo = (uint64_t)current->params;
    if (lo >= params_lo && hi <= params_lo + sizeof(unsigned long long) * current->spec->nparams) {
        if (is_write) {
            fail(pc, "writes the launch's parameter space");
        }
        return;
    }
    const uint32_t me = current->thread_base + (uint32_t)running->linear;
    for (size_t index = 0; index < current->regions.size(); ++index) {
        Region& region = current->regions[index];
        if (lo < region.lo || hi > region.hi) {
            continue;
        }
        if (is_write && !region.writable) {
            fail(pc, "writes %zu bytes into %s, a const input, at byte %llu", size, region.name,
                 (unsigned long long)(lo - region.lo));
        }
        const uint64_t first = (lo - region.lo) >> region.granule_shift;
        const uint64_t last = (hi - 1 - region.lo) >> region.granule_shift;
        for (uint64_t g = first; g <= last; ++g) {
            check_cell(region, region.cells[g], region.lo + (g << region.granule_shift),
                       is_write, me, pc);
        }
        if (current->traffic != nullptr) {
            record_access((uint32_t)index, region, lo, size, is_write, pc);
        }
        if (current->spec->yield_one_in != 0 &&
            next_random(current->rng) % current->spec->yield_one_in == 0) {
            yield_to_scheduler();
        }
        return;
    }
    for (const Fiber& other : fibers) {
        if (lo >= (uint64_t)other.stack_lo && lo < (uint64_t)other.stack_hi) {
            fail(pc, "%s %zu bytes of another thread's local memory", access, size);
        }
    }
    fail(pc, "%s %zu bytes at %p, outside every array it was given: %s", access, size, pointer,
         nearest_region(lo).c_str());
}

void prepare_stacks(int count)
{
    if ((size_t)count <= stack_pool_count) {
        return;
    }
    if (stack_pool != nullptr) {
        munmap(stack_pool, stack_pool_count * (kStackBytes + kGuardBytes));
    }
    const size_t bytes = (size_t)count * (kStackBytes + kGuardBytes);
    stack_pool = (char*)mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (int i = 0; i < count; ++i) {  // a guard page below each stack catches overflows
        mprotect(stack_pool + i * (kStackBytes + kGuardBytes), kGuardBytes, PROT_NONE);
    }
    stack_pool_count = count;
}

// The first code a fiber runs: the kernel's body, then the exit.
void fiber_main()
{
    current->spec->entry(current->params);
    running->state = State::exited;
    // A lane waiting in a shuffle for this one would wait forever.
    const int warp_first = running->linear / kWarpSize * kWarpSize;
    for (int i = warp_first; i < warp_first + kWarpSize && i < current->threads; ++i) {
        const Fiber& lane = fibers[i];
        const bool waits_for_me = lane.shuffle.mask >> (running->linear % kWarpSize) & 1;
        if (lane.state == State::at_shuffle && waits_for_me) {
            fail(0, "exits while lane %d waits for it in a warp shuffle (mask 0x%08x)",
                 i % kWarpSize, lane.shuffle.mask);
        }
    }
    yield_to_scheduler();  // never resumed
}

// Release the barrier once every thread of the block waits at it. Returns false when the
// block has finished (every thread exited).
bool release_barrier()
{
    int waiting = 0, exited = 0, shuffling = 0;
    for (int i = 0; i < current->threads; ++i) {
        waiting += fibers[i].state == State::at_barrier;
        exited += fibers[i].state == State::exited;
        shuffling += fibers[i].state == State::at_shuffle;
    }
    if (exited == current->threads) {
        return false;
    }
    if (shuffling > 0) {
        fail(0, "deadlock: %d threads wait in warp shuffles for lanes that wait at "
                "__syncthreads() (%d) or have exited (%d)", shuffling, waiting, exited);
    }
    if (exited > 0) {
        fail(0, "divergent __syncthreads(): %d threads wait at a barrier that %d threads of "
                "the block exited without reaching", waiting, exited);
    }
    for (int i = 1; i < current->threads; ++i) {
        if (fibers[i].barrier != fibers[0].barrier) {
            fail(fibers[i].barrier, "divergent __syncthreads(): threads (%u,%u,%u) and (%u,%u,%u) "
                 "wait at different barriers", fibers[0].index.x, fibers[0].index.y,
                 fibers[0].index.z, fibers[i].index.x, fibers[i].index.y, fibers[i].index.z);
        }
    }
    ++current->epoch;
    for (int i = 0; i < current->threads; ++i) {
        fibers[i].state = State::runnable;
        current->runnable.push_back(i);
    }
    return true;
}

void run_block(long long block_linear)
{
    Launch& launch = *current;
    const emu_launch_spec& spec = *launch.spec;
    launch.block_index = unflatten(block_linear, spec.grid);
    launch.thread_base = 1 + (uint32_t)(block_linear * launch.threads);
    launch.block_first_epoch = ++launch.epoch;
    for (Region& region : launch.regions) {
        if (region.shared) {  // fresh, poisoned shared memory for every block
            memset((void*)region.lo, 0xFF, region.hi - region.lo);
            std::fill(region.cells.begin(), region.cells.end(), Cell{});
        }
    }
    launch.runnable.clear();
    for (int i = 0; i < launch.threads; ++i) {
        Fiber& fiber = fibers[i];
        fiber.state = State::runnable;
        fiber.index = unflatten(i, spec.block);
        fiber.linear = i;
        fiber.stack_lo = stack_pool + i * (kStackBytes + kGuardBytes) + kGuardBytes;
        fiber.stack_hi = fiber.stack_lo + kStackBytes;
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = fiber.stack_lo;
        fiber.context.uc_stack.ss_size = kStackBytes;
        fiber.context.uc_link = nullptr;
        makecontext(&fiber.context, fiber_main, 0);
        launch.runnable.push_back(i);
    }
    for (;;) {
        if (launch.runnable.empty() && !release_barrier()) {
            if (launch.traffic != nullptr) {
                count_block_traffic();
            }
            return;
        }
        // Resume a random runnable fiber until it blocks, exits or yields.
        const size_t pick = next_random(launch.rng) % launch.runnable.size();
        running = &fibers[launch.runnable[pick]];
        swapcontext(&launch.scheduler, &running->context);
        if (running->state != State::runnable) {
            launch.runnable[pick] = launch.runnable.back();
            launch.runnable.pop_back();
        }
        running = nullptr;
    }
}

void on_signal(int number, siginfo_t* info, void* context)
{
    const ucontext_t* uc = (const ucontext_t*)context;
    // + 1: error_pc is read as a return address (the instruction before it is the culprit),
    // but a signal's pc is the faulting instruction itself.
    const uint64_t pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP] + 1;
    if (number == SIGILL) {
        fail(pc, "undefined behaviour (a UBSan check trapped: signed overflow, a shift too "
                 "wide, division by zero, an index past a fixed-size array, a null or "
                 "misaligned pointer, ...)");
    }
    if (number == SIGSEGV && running != nullptr &&
        (char*)info->si_addr >= running->stack_lo - kGuardBytes &&
        (char*)info->si_addr < running->stack_lo) {
        fail(pc, "stack overflow: the thread used more than %zu KiB of local memory",
             kStackBytes / 1024);
    }
    fail(pc, "signal %d (%s) at address %p", number, strsignal(number), info->si_addr);
}

const int kSignals[] = {SIGILL, SIGSEGV, SIGBUS, SIGFPE};

}  // namespace

extern "C" {

uint3 emu_thread_idx(void) { return running ? running->index : uint3{0, 0, 0}; }
uint3 emu_block_idx(void) { return current ? current->block_index : uint3{0, 0, 0}; }

uint3 emu_block_dim(void)
{
    const unsigned int* b = current ? current->spec->block : nullptr;
    return b ? uint3{b[0], b[1], b[2]} : uint3{1, 1, 1};
}

uint3 emu_grid_dim(void)
{
    const unsigned int* g = current ? current->spec->grid : nullptr;
    return g ? uint3{g[0], g[1], g[2]} : uint3{1, 1, 1};
}

void emu_syncthreads(void)
{
    running->barrier = (uint64_t)__builtin_return_address(0);
    running->state = State::at_barrier;
    yield_to_scheduler();
}

// The lane whose value `lane` receives from a shuffle; itself when the source falls
// outside its segment of `width` lanes (CUDA's rule).
static int shuffle_source(const ShuffleRequest& r, int lane)
{
    const int segment = lane & ~(r.width - 1);
    switch (r.kind) {
    case 0: return segment + (r.lane_argument & (r.width - 1));
    case 1: return (lane - segment) - r.lane_argument < 0 ? lane : lane - r.lane_argument;
    case 2: return (lane - segment) + r.lane_argument >= r.width ? lane : lane + r.lane_argument;
    default: {
        const int source = lane ^ r.lane_argument;
        return (source & ~(r.width - 1)) == segment ? source : lane;
    }
    }
}

unsigned long long emu_shuffle(int kind, unsigned int mask, unsigned long long bits,
                               int lane_argument, int width)
{
    const uint64_t pc = (uint64_t)__builtin_return_address(0);
    const int lane = running->linear % kWarpSize;
    const int warp_first = running->linear - lane;
    if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
        fail(pc, "warp shuffle width %d is not a power of 2 up to 32", width);
    }
    if ((mask >> lane & 1) == 0) {
        fail(pc, "warp shuffle mask 0x%08x does not name the calling lane %d", mask, lane);
    }
    for (int other = 0; other < kWarpSize; ++other) {
        if ((mask >> other & 1) == 0) {
            continue;
        }
        if (warp_first + other >= current->threads) {
            fail(pc, "warp shuffle mask 0x%08x names lane %d, which does not exist (%d threads "
                     "per block)", mask, other, current->threads);
        }
        if (fibers[warp_first + other].state == State::exited) {
            fail(pc, "warp shuffle mask 0x%08x names lane %d, which has exited", mask, other);
        }
    }
    running->shuffle = ShuffleRequest{kind, mask, bits, lane_argument, width};
    running->state = State::at_shuffle;
    // The last lane of the mask to arrive completes the exchange for all of them.
    for (int other = 0; other < kWarpSize; ++other) {
        if ((mask >> other & 1) && fibers[warp_first + other].state != State::at_shuffle) {
            yield_to_scheduler();
            running->state = State::runnable;
            return running->shuffle.bits;
        }
    }
    unsigned long long results[kWarpSize];
    for (int other = 0; other < kWarpSize; ++other) {
        if ((mask >> other & 1) == 0) {
            continue;
        }
        const ShuffleRequest& r = fibers[warp_first + other].shuffle;
        if (r.kind != kind || r.mask != mask || r.width != width) {
            fail(pc, "lanes %d and %d meet in different warp shuffles (kind %d/%d, mask "
                     "0x%08x/0x%08x)", lane, other, kind, r.kind, mask, r.mask);
        }
        const int source = shuffle_source(r, other);
        if ((mask >> source & 1) == 0) {
            fail(pc, "lane %d reads lane %d in a warp shuffle, which is not in the mask 0x%08x",
                 other, source, mask);
        }
        results[other] = fibers[warp_first + source].shuffle.bits;
    }
    for (int other = 0; other < kWarpSize; ++other) {
        if ((mask >> other & 1) && other != lane) {
            Fiber& waiting = fibers[warp_first + other];
            waiting.shuffle.bits = results[other];
            waiting.state = State::runnable;
            current->runnable.push_back(warp_first + other);
        }
    }
    running->state = State::runnable;
    return results[lane];
}

// Run a kernel over the grid. Returns 0, or 1 with the reason in emu_error_message().
int emu_launch(const emu_launch_spec* spec)
{
    const long long threads = (long long)spec->block[0] * spec->block[1] * spec->block[2];
    const long long blocks = (long long)spec->grid[0] * spec->grid[1] * spec->grid[2];
    last_error.clear();
    last_error_pc = 0;
    if (threads < 1 || threads > kMaxThreads || blocks < 1 || spec->nparams > kMaxParams) {
        last_error = "bad launch: block of " + std::to_string(threads) + " threads, grid of " +
                     std::to_string(blocks) + " blocks, " + std::to_string(spec->nparams) +
                     " parameters";
        return 1;
    }
    Launch launch;
    launch.spec = spec;
    launch.threads = (int)threads;
    launch.epoch = 0;
    launch.rng = spec->seed * 0x9E3779B97F4A7C15ULL + 1;
    launch.error_pc = 0;
    memcpy(launch.params, spec->params, sizeof(unsigned long long) * spec->nparams);
    for (int i = 0; i < spec->nbuffers + spec->nshared; ++i) {
        const bool shared = i >= spec->nbuffers;
        const emu_region& r = shared ? spec->shared[i - spec->nbuffers] : spec->buffers[i];
        const int shift = shared ? 0 : 2;
        const uint64_t origin = shared ? r.lo : r.origin;
        launch.regions.push_back(
            Region{r.lo, r.hi, r.writable != 0, r.name, shared, shift, {}, origin});
        launch.regions.back().cells.resize(((r.hi - r.lo) >> shift) + 1);
    }
    Traffic traffic;
    launch.traffic = spec->count_traffic ? &traffic : nullptr;
    if (launch.traffic != nullptr) {
        traffic.seen.resize(threads);
        for (const Region& r : launch.regions) {
            const uint64_t first = (r.lo - r.origin) >> kSectorShift;
            const uint64_t last = r.hi > r.lo ? (r.hi - 1 - r.origin) >> kSectorShift : first;
            traffic.sectors.emplace_back(last - first + 1, 0);
        }
    }
    counted_instructions.clear();
    counted_regions.clear();
    prepare_stacks((int)threads);
    fibers.assign(threads, Fiber{});

    struct sigaction handler, previous[4];
    memset(&handler, 0, sizeof handler);
    handler.sa_sigaction = on_signal;
    handler.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&handler.sa_mask);
    stack_t alternate, previous_alternate;
    alternate.ss_sp = signal_stack;
    alternate.ss_size = sizeof signal_stack;
    alternate.ss_flags = 0;
    sigaltstack(&alternate, &previous_alternate);
    for (int i = 0; i < 4; ++i) {
        sigaction(kSignals[i], &handler, &previous[i]);
    }

    current = &launch;
    if (sigsetjmp(launch.abandon, 1) == 0) {
        for (long long b = 0; b < blocks; ++b) {
            run_block(b);
        }
    }
    current = nullptr;
    running = nullptr;

    for (int i = 0; i < 4; ++i) {
        sigaction(kSignals[i], &previous[i], nullptr);
    }
    sigaltstack(&previous_alternate, nullptr);
    last_error = launch.error;
    last_error_pc = launch.error_pc;
    if (launch.traffic != nullptr && last_error.empty()) {
        for (const auto& entry : traffic.instructions) {
            counted_instructions.push_back(entry.second);
        }
        for (const std::vector<uint8_t>& marks : traffic.sectors) {
            emu_region_counts counts{0, 0};
            for (uint8_t mark : marks) {
                counts.read_sectors += mark & 1;
                counts.written_sectors += mark >> 1 & 1;
            }
            counted_regions.push_back(counts);
        }
    }
    return last_error.empty() ? 0 : 1;
}

const char* emu_error_message(void) { return last_error.c_str(); }
uint64_t emu_error_pc(void) { return last_error_pc; }
uint64_t emu_access_count(void) { return access_count; }

// The counting mode's results for the last launch that counted: its instructions (in
// order of address), and the regions (the launch's arrays, then its __shared__ variables).
int emu_counted_instructions(void) { return (int)counted_instructions.size(); }
int emu_counted_regions(void) { return (int)counted_regions.size(); }
emu_instruction_counts emu_counted_instruction(int i) { return counted_instructions[i]; }
emu_region_counts emu_counted_region(int i) { return counted_regions[i]; }

// --- the ThreadSanitizer instrumentation hooks: every load and store of kernel code ------
#define EMU_CALLER ((uint64_t)__builtin_return_address(0))
#define EMU_HOOKS(N)                                                                       \
    void __tsan_read##N(void* p) { check_access(p, N, false, EMU_CALLER); }                \
    void __tsan_write##N(void* p) { check_access(p, N, true, EMU_CALLER); }                \
    void __tsan_unaligned_read##N(void* p) { check_access(p, N, false, EMU_CALLER); }      \
    void __tsan_unaligned_write##N(void* p) { check_access(p, N, true, EMU_CALLER); }      \
    void __tsan_volatile_read##N(void* p) { check_access(p, N, false, EMU_CALLER); }       \
    void __tsan_volatile_write##N(void* p) { check_access(p, N, true, EMU_CALLER); }
EMU_HOOKS(1)
EMU_HOOKS(2)
EMU_HOOKS(4)
EMU_HOOKS(8)
EMU_HOOKS(16)

void __tsan_read_range(void* p, unsigned long size)
{
    check_access(p, size, false, EMU_CALLER);
}

void __tsan_write_range(void* p, unsigned long size)
{
    check_access(p, size, true, EMU_CALLER);
}

void* __tsan_memcpy(void* to, const void* from, unsigned long size)
{
    check_access(from, size, false, EMU_CALLER);
    check_access(to, size, true, EMU_CALLER);
    return memcpy(to, from, size);
}

void* __tsan_memmove(void* to, const void* from, unsigned long size)
{
    check_access(from, size, false, EMU_CALLER);
    check_access(to, size, true, EMU_CALLER);
    return memmove(to, from, size);
}

void* __tsan_memset(void* to, int value, unsigned long size)
{
    check_access(to, size, true, EMU_CALLER);
    return memset(to, value, size);
}

void __tsan_init(void) {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit(void) {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}

}  // extern "C"
