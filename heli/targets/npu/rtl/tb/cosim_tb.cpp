// Verilator testbench of the NPU core (heli/targets/npu/cosim.py builds it).
//
// Streams the program into the instruction port and models DRAM behind the
// memory bus: a response comes dma_latency cycles after its request at the
// earliest, at most dram_bytes_per_cycle bytes per cycle on average, one
// response (a beat of up to BEAT_ROWS rows) per cycle, in request order
// (docs/npu.md, "RTL core").
//
// usage: cosim_tb PROGRAM.bin DRAM.bin OUT_DIR LATENCY BYTES_PER_CYCLE MAX_CYCLES
// writes OUT_DIR/dram.bin (DRAM at the end), OUT_DIR/retire.bin (int64 per
// instruction: the cycle it completed, -1 if never), OUT_DIR/stores.bin (per
// DRAM row written: u32 address, u32 length, u64 cycle, the bytes) and
// OUT_DIR/result.txt ("status cycles tokens_empty error_pc").
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "Vheli_npu_core.h"
#include "verilated.h"

#if !defined(SLOT_BYTES) || !defined(BEAT_ROWS)
#error "SLOT_BYTES (4 * DIM) and BEAT_ROWS (rows per bus beat) must be defined"
#endif
#define DATA_BYTES (SLOT_BYTES * BEAT_ROWS)

static std::vector<uint8_t> read_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) { std::fprintf(stderr, "cannot open %s\n", path.c_str()); std::exit(2); }
    std::vector<uint8_t> data;
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

static void write_file(const std::string& path, const void* data, size_t n) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(data, 1, n, f) != n) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

// Verilator escapes the "__" of Amaranth's port names (bus__req_valid) as ___05F.
// Wide ports are arrays of 32-bit words; narrow ones (<= 64 bits) integers.
template <typename T> static void set_bytes(T& port, const uint8_t* src, size_t n) {
    uint8_t tmp[sizeof(T)] = {0};
    std::memcpy(tmp, src, n < sizeof(T) ? n : sizeof(T));
    std::memcpy(&port, tmp, sizeof(T));
}
template <typename T> static void get_bytes(const T& port, uint8_t* dst, size_t n) {
    std::memcpy(dst, &port, n < sizeof(T) ? n : sizeof(T));
}

struct Response { uint64_t at; std::vector<uint8_t> data; };

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: %s PROGRAM DRAM OUT_DIR LATENCY BYTES_PER_CYCLE MAX_CYCLES\n",
                     argv[0]);
        return 2;
    }
    std::vector<uint8_t> program = read_file(argv[1]);
    std::vector<uint8_t> dram = read_file(argv[2]);
    std::string out = argv[3];
    uint64_t latency = std::strtoull(argv[4], nullptr, 10);
    double bandwidth = std::strtod(argv[5], nullptr);
    uint64_t max_cycles = std::strtoull(argv[6], nullptr, 10);
    size_t n_instr = program.size() / 16;

    VerilatedContext ctx;
    Vheli_npu_core top(&ctx);
    std::vector<int64_t> retire(n_instr, -1);
    std::deque<Response> pending;
    std::vector<uint8_t> stores;
    double last = -1e300;
    size_t pc = 0;
    const char* status = "timeout";
    uint64_t cycle = 0;

    top.clk = 0;
    top.rst = 1;
    top.eval();
    top.clk = 1;
    top.eval();
    top.clk = 0;
    top.rst = 0;
    for (cycle = 0; cycle < max_cycles; ++cycle) {
        top.instr_valid = pc < n_instr;
        if (pc < n_instr) set_bytes(top.instr_word, &program[16 * pc], 16);
        top.bus___05Freq_ready = 1;
        bool due = !pending.empty() && pending.front().at <= cycle;
        top.bus___05Fresp_valid = due;
        if (due) set_bytes(top.bus___05Fresp_rdata, pending.front().data.data(), DATA_BYTES);
        top.eval();
        if (top.error) { status = "error"; break; }
        if (top.done) { status = "done"; break; }
        if (top.instr_ready) ++pc;
        if (top.bus___05Freq_valid) {
            uint64_t addr = top.bus___05Freq_addr, stride = top.bus___05Freq_stride;
            uint64_t rows = top.bus___05Freq_rows, n = top.bus___05Freq_len;
            uint64_t end = addr + (rows - 1) * stride + n;
            if (rows < 1 || rows > BEAT_ROWS || end > dram.size()) {
                std::fprintf(stderr, "cycle %llu: a bus request of %llu rows of %llu bytes at "
                             "%#llx (stride %llu) is outside the %zu-byte DRAM\n",
                             (unsigned long long)cycle, (unsigned long long)rows,
                             (unsigned long long)n, (unsigned long long)addr,
                             (unsigned long long)stride, dram.size());
                status = "bus_error";
                break;
            }
            Response r;
            r.data.assign(DATA_BYTES, 0);
            if (top.bus___05Freq_write) {
                uint8_t w[DATA_BYTES];
                get_bytes(top.bus___05Freq_wdata, w, DATA_BYTES);
                for (uint64_t j = 0; j < rows; ++j) {
                    uint64_t a = addr + j * stride;
                    std::memcpy(&dram[a], w + SLOT_BYTES * j, n);
                    uint32_t head[2] = {(uint32_t)a, (uint32_t)n};
                    uint64_t when = cycle;
                    stores.insert(stores.end(), (uint8_t*)head, (uint8_t*)head + 8);
                    stores.insert(stores.end(), (uint8_t*)&when, (uint8_t*)&when + 8);
                    stores.insert(stores.end(), w + SLOT_BYTES * j, w + SLOT_BYTES * j + n);
                }
            } else {
                for (uint64_t j = 0; j < rows; ++j)
                    std::memcpy(r.data.data() + SLOT_BYTES * j, &dram[addr + j * stride], n);
            }
            double ready = (double)(cycle + latency);
            last = std::max(ready, last + (double)(rows * n) / bandwidth);
            uint64_t at = (uint64_t)std::ceil(last - 1e-9);
            if (!pending.empty() && at <= pending.back().at) at = pending.back().at + 1;
            r.at = at;
            pending.push_back(std::move(r));
        }
        if (due && top.bus___05Fresp_ready) pending.pop_front();
        if (top.load_retire && top.load_retire_pc < n_instr) retire[top.load_retire_pc] = cycle;
        if (top.store_retire && top.store_retire_pc < n_instr) retire[top.store_retire_pc] = cycle;
        if (top.compute_retire && top.compute_retire_pc < n_instr)
            retire[top.compute_retire_pc] = std::max<int64_t>(retire[top.compute_retire_pc], cycle);
        if (top.weights_retire && top.weights_retire_pc < n_instr)
            retire[top.weights_retire_pc] = cycle;
        if (top.array_retire && top.array_retire_pc < n_instr)
            retire[top.array_retire_pc] = std::max<int64_t>(retire[top.array_retire_pc], cycle);
        top.clk = 1;
        top.eval();
        top.clk = 0;
    }
    write_file(out + "/dram.bin", dram.data(), dram.size());
    write_file(out + "/retire.bin", retire.data(), retire.size() * sizeof(int64_t));
    write_file(out + "/stores.bin", stores.data(), stores.size());
    FILE* f = std::fopen((out + "/result.txt").c_str(), "w");
    std::fprintf(f, "%s %llu %d %u\n", status, (unsigned long long)cycle, (int)top.tokens_empty,
                 (unsigned)top.error_pc);
    std::fclose(f);
    top.final();
    return 0;
}
