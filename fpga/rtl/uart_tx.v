// UART transmitter, 8N1, LSB first. `start` with `data` begins a byte when `busy` is low;
// `busy` stays high until the stop bit has lasted its full CLKS_PER_BIT cycles.
`default_nettype none
module uart_tx #(
    parameter integer CLKS_PER_BIT = 104
) (
    input  wire       clk,
    input  wire       rst,
    input  wire [7:0] data,
    input  wire       start,
    output reg        tx,
    output wire       busy
);
    localparam integer CW = $clog2(CLKS_PER_BIT + 1);
    localparam [CW-1:0] LAST = CLKS_PER_BIT - 1;
    reg [8:0] shift;  // the bits after the one on the line: data[7:0] then stop
    reg [3:0] bits_left;  // bits not yet finished, the one on the line included
    reg [CW-1:0] count;

    assign busy = bits_left != 0;

    always @(posedge clk) begin
        if (rst) begin
            tx <= 1'b1;
            shift <= 9'h1FF;
            bits_left <= 0;
            count <= 0;
        end else if (bits_left == 0) begin
            tx <= 1'b1;
            if (start) begin
                tx <= 1'b0;  // start bit
                shift <= {1'b1, data};
                bits_left <= 4'd10;
                count <= LAST;
            end
        end else if (count != 0) begin
            count <= count - 1'b1;
        end else begin  // the bit on the line has lasted CLKS_PER_BIT cycles
            bits_left <= bits_left - 1'b1;
            if (bits_left != 4'd1) begin
                tx <= shift[0];
                shift <= {1'b1, shift[8:1]};
                count <= LAST;
            end
        end
    end
endmodule
