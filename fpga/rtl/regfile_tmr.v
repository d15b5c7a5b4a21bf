// The read-write registers (hal/icd.py RW_REGISTERS, in order), each a 32-bit word.
// HARDEN=1: three copies per register in separate keep_hierarchy modules (so synthesis
// cannot merge them), a bitwise majority voter, and every cycle each copy reloads the
// voted value, so an upset in one copy is out-voted at once and repaired on the next
// clock; `mismatch` is high on any cycle where copies disagree. HARDEN=0: one copy.
// `inj` flips bit `inj_bit` of copy `inj_copy` of register `inj_index` (debug SEU);
// INJECT=0 (flight bitstreams) leaves the flip logic out of every copy, and INJ_ARM out
// altogether (it reads 0: there is nothing to arm).
`default_nettype none
`include "orbithil_icd.vh"

// One copy. INJECT=1: it loads `d` (the shared write-or-vote choice) and `flip_en` with
// the one-hot `bit_sel` (decoded once for all copies) flips a bit: one LUT per bit, inside
// the copy, where synthesis cannot share it away. INJECT=0: no flip, and the copy makes
// its own write-or-vote choice from `write`, `wdata` and `voted`: one LUT per bit that
// packs with the bit's flip-flop (a choice shared by three copies cannot), 32 logic cells
// fewer per copy.
(* keep_hierarchy *)
module tmr_copy #(
    parameter integer INJECT = 1
) (
    input  wire        clk,
    input  wire        rst,
    input  wire [31:0] d,
    input  wire        write,
    input  wire [31:0] wdata,
    input  wire [31:0] voted,
    input  wire        flip_en,
    input  wire [31:0] bit_sel,
    output reg  [31:0] q
);
    always @(posedge clk)
        if (rst) q <= 32'h0;
        else if (INJECT != 0) q <= d ^ (bit_sel & {32{flip_en}});
        else q <= write ? wdata : voted;
endmodule

module regfile_tmr #(
    parameter integer HARDEN = 1,
    parameter integer INJECT = 1
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        we,
    input  wire [3:0]  windex,
    input  wire [31:0] wdata,
    input  wire        inj,
    input  wire [3:0]  inj_index,
    input  wire [4:0]  inj_bit,
    input  wire [1:0]  inj_copy,
    output wire [32*`OH_RW_COUNT-1:0] values,
    output wire        mismatch
);
    localparam integer N = `OH_RW_COUNT;
    wire [N-1:0] differs;
    wire [31:0] bit_sel = 32'h1 << inj_bit;  // decoded once, shared by every copy
    assign mismatch = |differs;

    genvar r;
    generate
        for (r = 0; r < N; r = r + 1) begin : g_reg
            wire [31:0] voted;
            wire        write = we && windex == r;
            wire        hit = inj && inj_index == r;
            wire [31:0] d = write ? wdata : voted;  // each copy reloads the vote: repair
            // (INJECT=0: each copy makes this choice itself, see tmr_copy)
            // (three plain ifs, not an else-if chain: simulators name the scopes alike)
            if (INJECT == 0 && r == `OH_RW_INJ_ARM) begin : g_absent
                // nothing to arm in a build without INJECT: reads 0, writes are ignored
                assign voted = 32'h0;
                assign differs[r] = 1'b0;
            end
            if (!(INJECT == 0 && r == `OH_RW_INJ_ARM) && HARDEN != 0) begin : g_tmr
                wire [31:0] q0, q1, q2;
                tmr_copy #(.INJECT(INJECT)) u_c0 (
                    .clk(clk), .rst(rst), .d(d), .write(write), .wdata(wdata), .voted(voted),
                    .flip_en(hit && inj_copy == 2'd0), .bit_sel(bit_sel), .q(q0));
                tmr_copy #(.INJECT(INJECT)) u_c1 (
                    .clk(clk), .rst(rst), .d(d), .write(write), .wdata(wdata), .voted(voted),
                    .flip_en(hit && inj_copy == 2'd1), .bit_sel(bit_sel), .q(q1));
                tmr_copy #(.INJECT(INJECT)) u_c2 (
                    .clk(clk), .rst(rst), .d(d), .write(write), .wdata(wdata), .voted(voted),
                    .flip_en(hit && inj_copy == 2'd2), .bit_sel(bit_sel), .q(q2));
                assign voted = (q0 & q1) | (q1 & q2) | (q0 & q2);
                assign differs[r] = |((q0 ^ q1) | (q1 ^ q2));
            end
            if (!(INJECT == 0 && r == `OH_RW_INJ_ARM) && HARDEN == 0) begin : g_single
                wire [31:0] q0;
                tmr_copy #(.INJECT(INJECT)) u_c0 (
                    .clk(clk), .rst(rst), .d(d), .write(write), .wdata(wdata), .voted(voted),
                    .flip_en(hit), .bit_sel(bit_sel), .q(q0));
                assign voted = q0;
                assign differs[r] = 1'b0;
            end
            assign values[32*r +: 32] = voted;
        end
    endgenerate
endmodule
