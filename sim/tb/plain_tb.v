// A plain Verilog testbench for measuring raw simulation speed (``orbithil bench inject``):
// chip_tb with no cocotb. The host's byte queue is preloaded from a hex file (a workload's
// request bytes) and sent back to back; the run ends after +CYCLES clock cycles.
`timescale 1ns/1ps
`default_nettype none
module plain_tb;
    chip_tb #(.HARDEN(`HARDEN), .CLKS_PER_BIT(`CLKS_PER_BIT), .MEM_WORDS(2048)) u ();
    integer bytes, cycles;
    initial begin
        if (!$value$plusargs("BYTES=%d", bytes)) bytes = 0;
        if (!$value$plusargs("CYCLES=%d", cycles)) cycles = 100000;
        $readmemh("stimulus.hex", u.txq);
        u.txq_len = bytes;
        #80 u.rst = 1'b0;
        #(cycles * 10) $finish;
    end
endmodule
