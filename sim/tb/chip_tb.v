// Simulation top: the chip, its clock (made here, so no Python runs per cycle) and the
// host's side of the UART as two byte queues. Python appends bytes to `txq` and advances
// `txq_len`; they go out at the chip's baud rate. Bytes from the chip land in `rxq`,
// counted by `rxq_len`. Both are rings of 4096 bytes. Python holds `rst` (starts high);
// a reset also drops bytes still queued for the chip.
`timescale 1ns/1ps
`default_nettype none
module chip_tb #(
    parameter integer HARDEN = 1,
    parameter integer CLKS_PER_BIT = 4,
    parameter integer MEM_WORDS = 2048,
    parameter integer FEC = 1,
    parameter integer INJECT = 1,
    parameter integer MEM_SPRAM = 0
) ();
    reg clk = 1'b0;
    always #5 clk = ~clk;  // 100 MHz simulated clock
    reg rst = 1'b1;

    reg [7:0]  txq [0:4095];
    reg [31:0] txq_len = 0;
    reg [31:0] txq_pos = 0;
    reg [7:0]  rxq [0:4095];
    reg [31:0] rxq_len = 0;

    wire host_to_chip, chip_to_host, host_busy, host_rx_valid, host_rx_err;
    wire [7:0] host_rx_byte;
    reg        host_start = 1'b0;
    reg  [7:0] host_byte = 8'h00;
    wire [2:0] led;

    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_host_tx (
        .clk(clk), .rst(rst), .data(host_byte), .start(host_start), .tx(host_to_chip),
        .busy(host_busy));
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_host_rx (
        .clk(clk), .rst(rst), .rx(chip_to_host), .data(host_rx_byte), .valid(host_rx_valid),
        .frame_err(host_rx_err));

    always @(posedge clk) begin
        host_start <= 1'b0;
        if (rst) txq_pos <= txq_len;  // a reset drops whatever was still queued
        else if (!host_busy && !host_start && txq_pos != txq_len) begin
            host_byte <= txq[txq_pos[11:0]];
            host_start <= 1'b1;
            txq_pos <= txq_pos + 1;
        end
        if (host_rx_valid) begin
            rxq[rxq_len[11:0]] <= host_rx_byte;
            rxq_len <= rxq_len + 1;
        end
    end

    orbithil_chip #(.HARDEN(HARDEN), .CLKS_PER_BIT(CLKS_PER_BIT), .MEM_WORDS(MEM_WORDS),
                    .FEC(FEC), .INJECT(INJECT), .MEM_SPRAM(MEM_SPRAM)) dut (
        .clk(clk), .rst(rst), .uart_rx(host_to_chip), .uart_tx(chip_to_host), .led(led));

    // --- Memory access trace for the injection engine's def/use pruning (sim/prune.py) ---
    // Off unless the engine sets `trace_on` (it does for the golden run only), with the file
    // name in `trace_path`. A memory's read port loads the word at its read address on
    // every rising edge, whether its user takes the word or not, so each edge is a read of
    // that word: "<time> <memory> R <address>" is written when a memory's read address
    // differs from the previous edge's, "<time> <memory> W <address>" for every write (a
    // write always stores a whole word). Memories: 0 u_mem.mem, 1 u_frame_rx.buffer0,
    // 2 u_frame_rx.buffer1, 3 u_frame_tx.buffer. The conditions mirror the memories'
    // always blocks; a test compares pruned outcomes with fully simulated ones.
    reg [8*1024-1:0] trace_path = 0;
    reg              trace_on = 1'b0;
    integer          trace_fd = 0;
    reg              trace_fresh = 1'b1;  // the first traced edge logs every read address
    reg [31:0]       trace_r0, trace_r1, trace_r2, trace_r3;
    always @(posedge clk) begin
        if (trace_on && trace_fd == 0) begin
            trace_fd = $fopen(trace_path, "w");
            trace_fresh = 1'b1;
        end else if (!trace_on && trace_fd != 0) begin
            $fclose(trace_fd);
            trace_fd = 0;
        end
        if (trace_fd != 0) begin
            if (trace_fresh || trace_r0 != dut.u_mem.mem_addr)
                $fwrite(trace_fd, "%0d 0 R %0d\n", $time, dut.u_mem.mem_addr);
            if (trace_fresh || trace_r1 != dut.u_frame_rx.a0)
                $fwrite(trace_fd, "%0d 1 R %0d\n", $time, dut.u_frame_rx.a0);
            if (trace_fresh || trace_r2 != dut.u_frame_rx.a1)
                $fwrite(trace_fd, "%0d 2 R %0d\n", $time, dut.u_frame_rx.a1);
            if (trace_fresh || trace_r3 != dut.u_frame_tx.raddr)
                $fwrite(trace_fd, "%0d 3 R %0d\n", $time, dut.u_frame_tx.raddr);
            if (dut.u_mem.mem_we)
                $fwrite(trace_fd, "%0d 0 W %0d\n", $time, dut.u_mem.mem_waddr);
            if (dut.u_frame_rx.wr_en && !dut.u_frame_rx.wbank)
                $fwrite(trace_fd, "%0d 1 W %0d\n", $time, dut.u_frame_rx.wr_addr);
            if (dut.u_frame_rx.wr_en && dut.u_frame_rx.wbank)
                $fwrite(trace_fd, "%0d 2 W %0d\n", $time, dut.u_frame_rx.wr_addr);
            if (dut.u_frame_tx.internal_we)
                $fwrite(trace_fd, "%0d 3 W %0d\n", $time, dut.u_frame_tx.internal_addr);
            else if (dut.u_frame_tx.we && dut.u_frame_tx.state == 5'd0)  // frame_tx's IDLE
                $fwrite(trace_fd, "%0d 3 W %0d\n", $time, dut.u_frame_tx.waddr);
            trace_fresh = 1'b0;
            trace_r0 = dut.u_mem.mem_addr;
            trace_r1 = dut.u_frame_rx.a0;
            trace_r2 = dut.u_frame_rx.a1;
            trace_r3 = dut.u_frame_tx.raddr;
        end
    end

    // --- The injection engine's port (sim/engine_port.py): checkpoints, restore, compare
    // and flips in Verilog, so the chip's state need not be public. Generated per build.
`ifdef ORBITHIL_ENGINE_PORT
`include "engine_port.vh"
`endif
endmodule
