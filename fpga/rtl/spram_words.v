// W-bit words in the iCE40 UP5K's single-port SPRAM (SB_SPRAM256KA: 16K x 16 bits each,
// ceil(W/16) side by side; only the low AW address bits are used). One port: on a clock
// edge with `we` the word at `addr` is written, otherwise it is read and `q` holds it from
// that edge on (the latency of a block RAM read on a registered address). Nothing is
// initialised: secded_mem clears the words after configuration.
// Synthesis (yosys defines SYNTHESIS) gets the hard blocks; a simulator gets a model with
// the same timing (and `q` unknown after a write, as the hard block's output).
`default_nettype none
module spram_words #(
    parameter integer W = 39,
    parameter integer AW = 11
) (
    input  wire          clk,
    input  wire          we,
    input  wire [AW-1:0] addr,
    input  wire [W-1:0]  wdata,
    output wire [W-1:0]  q
);
    localparam integer BLOCKS = (W + 15) / 16;
`ifdef SYNTHESIS
    wire [16*BLOCKS-1:0] din = {{(16*BLOCKS-W){1'b0}}, wdata};
    wire [16*BLOCKS-1:0] dout;
    wire [13:0]          address = {{(14-AW){1'b0}}, addr};
    genvar b;
    generate
        for (b = 0; b < BLOCKS; b = b + 1) begin : g_block
            SB_SPRAM256KA u_spram (
                .ADDRESS(address), .DATAIN(din[16*b +: 16]), .MASKWREN(4'b1111), .WREN(we),
                .CHIPSELECT(1'b1), .CLOCK(clk), .STANDBY(1'b0), .SLEEP(1'b0),
                .POWEROFF(1'b1), .DATAOUT(dout[16*b +: 16]));
        end
    endgenerate
    assign q = dout[W-1:0];
`else
    reg [W-1:0] words [0:(1<<AW)-1];
    reg [W-1:0] q_r;
    always @(posedge clk)
        if (we) begin
            words[addr] <= wdata;
            q_r <= {W{1'bx}};
        end else q_r <= words[addr];
    assign q = q_r;
`endif
endmodule
