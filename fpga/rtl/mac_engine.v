// MAC engine: y[r] = sum_c W[r][c] * x[c], int8 x int8 with int32 accumulation.
// Operands are packed 4 per 32-bit word (byte 0 = bits 7:0); W is row-major with cols/4
// words per row; y is one int32 word per row. cols must be a multiple of 4 (checked by the
// executor). HARDEN=1: every row is computed twice (DMR) and the two sums compared; on a
// mismatch the row is recomputed once (`retry` pulses) and if they still differ the job
// ends with status 2. An uncorrectable operand word ends it with status 1. `stop` (the
// watchdog) ends it at once with status 3.
`default_nettype none
module mac_engine #(
    parameter integer HARDEN = 1,
    parameter integer AW = 11
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    input  wire          stop,
    input  wire [15:0]   w_addr,
    input  wire [15:0]   x_addr,
    input  wire [15:0]   y_addr,
    input  wire [7:0]    rows,
    input  wire [7:0]    cols,
    output wire          busy,
    output reg           done,
    output reg  [7:0]    status,
    output reg  [31:0]   cycles,
    output reg           retry,
    output reg           req,
    output reg           we,
    output reg  [AW-1:0] addr,
    output reg  [31:0]   wdata,
    input  wire          ack,
    input  wire [31:0]   rdata,
    input  wire [1:0]    rstatus
);
    localparam [2:0] IDLE = 0, READ_W = 1, READ_X = 2, ROW_END = 3, WRITE_Y = 4, FINISH = 5;
    reg [2:0] state;
    reg [15:0] xa, ya;
    reg [7:0] n_rows, words_per_row, row, k;
    reg [15:0] row_base;
    reg [31:0] w_word, acc, acc_first;
    reg pass, retried;

    assign busy = state != IDLE;

    function signed [31:0] dot4(input [31:0] a, input [31:0] b);
        dot4 = $signed(a[7:0]) * $signed(b[7:0]) + $signed(a[15:8]) * $signed(b[15:8])
             + $signed(a[23:16]) * $signed(b[23:16]) + $signed(a[31:24]) * $signed(b[31:24]);
    endfunction

    always @(posedge clk) begin
        done <= 1'b0;
        retry <= 1'b0;
        req <= 1'b0;  // a one-cycle pulse per memory request
        if (rst) begin
            state <= IDLE; req <= 1'b0; we <= 1'b0; addr <= 0; wdata <= 0; status <= 0;
            cycles <= 0; xa <= 0; ya <= 0; n_rows <= 0; words_per_row <= 0;
            row <= 0; k <= 0; row_base <= 0; w_word <= 0; acc <= 0; acc_first <= 0;
            pass <= 1'b0; retried <= 1'b0;
        end else if (state != IDLE && stop) begin
            status <= 8'd3;
            done <= 1'b1;
            state <= IDLE;
        end else begin
            if (state != IDLE) cycles[23:0] <= cycles[23:0] + 1'b1;  // 24 bits: ample per job
            case (state)
                IDLE: if (start) begin
                    xa <= x_addr; ya <= y_addr;
                    n_rows <= rows; words_per_row <= cols >> 2;
                    row <= 0; k <= 0; row_base <= w_addr; acc <= 0;
                    pass <= 1'b0; retried <= 1'b0; status <= 0; cycles <= 0;
                    req <= 1'b1; we <= 1'b0; addr <= w_addr[AW-1:0];
                    state <= READ_W;
                end
                READ_W: if (ack) begin
                    if (rstatus == 2'd2) begin status <= 8'd1; state <= FINISH; end
                    else begin
                        w_word <= rdata;
                        req <= 1'b1;
                        addr <= xa[AW-1:0] + k;
                        state <= READ_X;
                    end
                end
                READ_X: if (ack) begin
                    if (rstatus == 2'd2) begin status <= 8'd1; state <= FINISH; end
                    else begin
                        acc <= acc + dot4(w_word, rdata);
                        if (k + 1'b1 == words_per_row) state <= ROW_END;
                        else begin
                            k <= k + 1'b1;
                            req <= 1'b1;
                            addr <= row_base[AW-1:0] + k + 1'b1;
                            state <= READ_W;
                        end
                    end
                end
                ROW_END: begin
                    k <= 0;
                    if (HARDEN != 0 && !pass) begin  // second pass of this row
                        pass <= 1'b1;
                        acc_first <= acc;
                        acc <= 0;
                        req <= 1'b1; addr <= row_base[AW-1:0];
                        state <= READ_W;
                    end else if (HARDEN != 0 && acc != acc_first) begin
                        pass <= 1'b0;
                        acc <= 0;
                        if (!retried) begin
                            retried <= 1'b1;
                            retry <= 1'b1;
                            req <= 1'b1; addr <= row_base[AW-1:0];
                            state <= READ_W;
                        end else begin
                            status <= 8'd2;
                            state <= FINISH;
                        end
                    end else begin
                        req <= 1'b1; we <= 1'b1;
                        addr <= ya[AW-1:0] + row;
                        wdata <= acc;
                        state <= WRITE_Y;
                    end
                end
                WRITE_Y: if (ack) begin
                    we <= 1'b0;
                    pass <= 1'b0; retried <= 1'b0; acc <= 0;
                    if (row + 1'b1 == n_rows) state <= FINISH;
                    else begin
                        row <= row + 1'b1;
                        row_base <= row_base + words_per_row;
                        req <= 1'b1; addr <= row_base[AW-1:0] + words_per_row;
                        state <= READ_W;
                    end
                end
                FINISH: begin
                    done <= 1'b1;
                    state <= IDLE;
                end
                default: state <= IDLE;
            endcase
        end
    end
endmodule
