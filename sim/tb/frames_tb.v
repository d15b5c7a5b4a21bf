// frame_rx and frame_tx alone. Python feeds encoded bytes to frame_rx (`in_data` /
// `in_valid`) and reads the decoded body from its buffer; it writes bodies into frame_tx
// and `send`s them, and the bytes frame_tx emits are collected in `out_bytes` (a model
// UART holds `out_busy` for a few cycles per byte).
`timescale 1ns/1ps
`default_nettype none
module frames_tb ();
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1;
    // frame_rx
    reg  [7:0] in_data = 8'h00;
    reg        in_valid = 1'b0;
    reg  [8:0] raddr = 9'd0;
    wire [7:0] rdata, status, seq, cmd;
    wire [8:0] body_len;
    wire       done, fec, rpar_err, vpar, tx_par_err;
    wire [1:0] fec_fixed;
    reg  [31:0] frames_done = 0;
    reg  [7:0]  last_status = 0;
    reg  [8:0]  last_len = 0;
    reg         last_fec = 1'b0;
    always @(posedge clk) if (done) begin
        frames_done <= frames_done + 1;
        last_status <= status;
        last_len <= body_len;
        last_fec <= fec;
    end
    // The hardened engines (PARITY=1): what they decode and send is the same.
    frame_rx #(.PARITY(1)) u_rx (.clk(clk), .rst(rst), .in_data(in_data), .in_valid(in_valid),
        .hold(1'b0), .raddr(raddr), .rdata(rdata), .rpar_err(rpar_err), .done(done),
        .status(status), .body_len(body_len), .seq(seq), .cmd(cmd), .fec(fec), .vpar(vpar),
        .fec_fixed(fec_fixed));
    // frame_tx
    reg  [8:0] waddr = 0;
    reg  [7:0] wdata = 0;
    reg        we = 1'b0, send = 1'b0;
    reg  [8:0] base = 0, len = 0;
    wire [7:0] out_data;
    wire       out_start, tx_busy;
    reg  [3:0] uart_count = 0;
    wire       out_busy = uart_count != 0;
    reg  [7:0] out_bytes [0:1023];
    reg  [31:0] out_len = 0;
    always @(posedge clk) begin
        if (uart_count != 0) uart_count <= uart_count - 1'b1;
        if (out_start) begin
            out_bytes[out_len[9:0]] <= out_data;
            out_len <= out_len + 1;
            uart_count <= 4'd7;
        end
    end
    frame_tx #(.PARITY(1)) u_tx (.clk(clk), .rst(rst), .waddr(waddr), .wdata(wdata),
        .wpar(^wdata), .we(we), .send(send), .base(base), .len(len), .busy(tx_busy),
        .par_err(tx_par_err), .out_data(out_data), .out_start(out_start), .out_busy(out_busy));
endmodule
