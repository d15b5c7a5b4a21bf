// regfile_tmr alone (HARDEN as a parameter), clock made here; Python drives the ports.
`timescale 1ns/1ps
`default_nettype none
`include "orbithil_icd.vh"
module regfile_tb #(parameter integer HARDEN = 1) ();
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1, we = 1'b0, inj = 1'b0;
    reg [3:0] windex = 0, inj_index = 0;
    reg [31:0] wdata = 0;
    reg [4:0] inj_bit = 0;
    reg [1:0] inj_copy = 0;
    wire [32*`OH_RW_COUNT-1:0] values;
    wire mismatch;
    reg [31:0] mismatch_cycles = 0;
    always @(posedge clk) if (mismatch) mismatch_cycles <= mismatch_cycles + 1;
    regfile_tmr #(.HARDEN(HARDEN)) u_regs (.clk(clk), .rst(rst), .we(we), .windex(windex),
        .wdata(wdata), .inj(inj), .inj_index(inj_index), .inj_bit(inj_bit),
        .inj_copy(inj_copy), .values(values), .mismatch(mismatch));
endmodule
