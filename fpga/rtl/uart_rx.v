// UART receiver, 8N1, LSB first. CLKS_PER_BIT clock cycles per bit (>= 4).
// The line is synchronised through two flip-flops; a start bit is confirmed at its middle,
// data bits are sampled at their middles. A stop bit that reads 0 is a framing error: the
// byte is dropped and `frame_err` pulses; a line still low is then taken as a new start
// bit, which re-synchronises the receiver within a few bytes of garbage.
`default_nettype none
module uart_rx #(
    parameter integer CLKS_PER_BIT = 104
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       rx,
    output reg  [7:0] data,
    output reg        valid,
    output reg        frame_err
);
    localparam integer CW = $clog2(CLKS_PER_BIT + 1);
    localparam [1:0] IDLE = 2'd0, START = 2'd1, BITS = 2'd2, STOP = 2'd3;
    // The start bit is seen 3 cycles after its edge (2 synchroniser flip-flops, 1 state);
    // waiting HALF more puts every sample in the middle of its bit.
    localparam integer HALF_WAIT = CLKS_PER_BIT / 2 - 3;
    localparam [CW-1:0] HALF = HALF_WAIT > 0 ? HALF_WAIT : 0, LAST = CLKS_PER_BIT - 1;

    reg rx_meta, rx_sync;
    reg [1:0] state;
    reg [CW-1:0] count;
    reg [2:0] bit_index;
    reg [7:0] shift;

    always @(posedge clk) begin
        rx_meta <= rx;
        rx_sync <= rx_meta;
        valid <= 1'b0;
        frame_err <= 1'b0;
        if (rst) begin
            rx_meta <= 1'b1;
            rx_sync <= 1'b1;
            state <= IDLE;
            count <= 0;
            bit_index <= 0;
            shift <= 8'h00;
            data <= 8'h00;
        end else begin
            case (state)
                IDLE: if (!rx_sync) begin
                    state <= START;
                    count <= HALF;
                end
                START: if (count != 0) count <= count - 1'b1;
                else if (!rx_sync) begin  // still low at mid-bit: a real start bit
                    state <= BITS;
                    count <= LAST;
                    bit_index <= 3'd0;
                end else state <= IDLE;  // a glitch
                BITS: if (count != 0) count <= count - 1'b1;
                else begin
                    shift <= {rx_sync, shift[7:1]};
                    count <= LAST;
                    if (bit_index == 3'd7) state <= STOP;
                    bit_index <= bit_index + 1'b1;
                end
                STOP: if (count != 0) count <= count - 1'b1;
                else begin
                    if (rx_sync) begin
                        data <= shift;
                        valid <= 1'b1;
                        state <= IDLE;
                    end else begin
                        frame_err <= 1'b1;
                        state <= IDLE;
                    end
                end
            endcase
        end
    end
endmodule
