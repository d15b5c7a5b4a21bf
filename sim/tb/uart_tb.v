// uart_rx and uart_tx alone, 16 clocks per bit, clock made here. Python drives `rx` bit by
// bit (an independent model of 8N1) and samples `tx`.
`timescale 1ns/1ps
`default_nettype none
module uart_tb ();
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1;
    reg rx = 1'b1;
    reg [7:0] tx_data = 8'h00;
    reg tx_start = 1'b0;
    wire [7:0] rx_data;
    wire rx_valid, rx_frame_err, tx, tx_busy;
    reg [7:0] last_byte = 8'h00;
    reg [31:0] bytes_seen = 0, frame_errors = 0;
    always @(posedge clk) begin
        if (rx_valid) begin
            last_byte <= rx_data;
            bytes_seen <= bytes_seen + 1;
        end
        if (rx_frame_err) frame_errors <= frame_errors + 1;
    end
    uart_rx #(.CLKS_PER_BIT(16)) u_rx (.clk(clk), .rst(rst), .rx(rx), .data(rx_data),
        .valid(rx_valid), .frame_err(rx_frame_err));
    uart_tx #(.CLKS_PER_BIT(16)) u_tx (.clk(clk), .rst(rst), .data(tx_data), .start(tx_start),
        .tx(tx), .busy(tx_busy));
endmodule
