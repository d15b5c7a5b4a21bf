// Frame transmitter: the executor writes a body (header and payload) into the transmit
// buffer at `base` and pulses `send` with its length; this appends the CRC-16 and sends
// 00 | COBS(body, crc) | 00 through the UART transmitter. COBS needs each group's length
// before its bytes, so every group is scanned first, then sent. Reads of the buffer are
// synchronous: an address is set, its byte is there two states later.
// With `fec` high at `send` the frame goes out as version 2 (fpga/ICD.md, "Forward error
// correction"): the version byte reads 2 and four Reed-Solomon parity bytes, computed by an
// LFSR as the CRC pass reads the body, follow the CRC. Otherwise the version byte reads 1.
`default_nettype none
`include "orbithil_icd.vh"
module frame_tx (
    input  wire       clk,
    input  wire       rst,
    input  wire [8:0] waddr,
    input  wire [7:0] wdata,
    input  wire       we,
    input  wire       send,
    input  wire [8:0] base,
    input  wire [8:0] len,
    input  wire       fec,
    output wire       busy,
    output reg  [7:0] out_data,
    output reg        out_start,
    input  wire       out_busy
);
`include "crc16.vh"
`include "gf256.vh"
    localparam [4:0] IDLE = 0, CRC_WAIT = 1, CRC_TAKE = 2, CRC_HI = 3, CRC_LO = 4,
                     SCAN_START = 5, SCAN_READ = 6, SCAN_WAIT = 7, SCAN_TAKE = 8,
                     SEND_CODE = 9, DATA_READ = 10, DATA_WAIT = 11, DATA_TAKE = 12,
                     GROUP_END = 13, FINISH = 14, SEND_BYTE = 15, SEND_WAIT = 16,
                     PARITY = 17, COBS_START = 18;
    reg [4:0] state, after_send;
    reg [7:0] buffer [0:511];
    integer k;
    initial for (k = 0; k < 512; k = k + 1) buffer[k] = 8'h00;  // as block RAM starts; no X
    reg [8:0] raddr;
    reg [7:0] rdata;
    reg [8:0] frame_base, total, pos, i;
    reg [8:0] run;
    reg [15:0] crc;
    reg        internal_we;
    reg [8:0]  internal_addr;
    reg [7:0]  internal_data;
    reg        fec_mode;
    reg [7:0]  r0, r1, r2, r3;  // RS parity LFSR: the remainder of body(x) x^4 mod g(x)
    reg [2:0]  par_left;
    wire [7:0] version_byte = fec_mode ? `OH_FEC_VERSION : `OH_FRAME_VERSION;
    // One RS encoder step for byte b: the feedback and the next LFSR contents.
    task rs_step(input [7:0] b);
        reg [7:0] fb;
        begin
            fb = b ^ r3;
            r3 <= r2 ^ gf_mul(fb, `OH_RS_G3);
            r2 <= r1 ^ gf_mul(fb, `OH_RS_G2);
            r1 <= r0 ^ gf_mul(fb, `OH_RS_G1);
            r0 <= gf_mul(fb, `OH_RS_G0);
        end
    endtask

    assign busy = state != IDLE || out_busy;  // until the last byte has left the UART
    wire [8:0] group_end = pos + run;

    always @(posedge clk) begin
        rdata <= buffer[raddr];
        if (internal_we) buffer[internal_addr] <= internal_data;
        else if (we && state == IDLE) buffer[waddr] <= wdata;
    end

    always @(posedge clk) begin
        out_start <= 1'b0;
        internal_we <= 1'b0;
        if (rst) begin
            state <= IDLE; after_send <= IDLE; raddr <= 0; frame_base <= 0; total <= 0;
            pos <= 0; i <= 0; run <= 0; crc <= `OH_CRC16_INIT; out_data <= 0;
            internal_addr <= 0; internal_data <= 0; fec_mode <= 1'b0;
            r0 <= 0; r1 <= 0; r2 <= 0; r3 <= 0; par_left <= 0;
        end else case (state)
            IDLE: if (send) begin
                frame_base <= base;
                total <= len;
                i <= 0;
                crc <= `OH_CRC16_INIT;
                fec_mode <= fec;
                r0 <= 0; r1 <= 0; r2 <= 0; r3 <= 0;
                raddr <= base;
                state <= (len == 0) ? CRC_HI : CRC_WAIT;
            end
            CRC_WAIT: state <= CRC_TAKE;
            CRC_TAKE: begin  // rdata is body[i]; body[0] is the version
                crc <= crc16_byte(crc, (i == 0) ? version_byte : rdata);
                rs_step((i == 0) ? version_byte : rdata);
                if (i + 1'b1 == total) state <= CRC_HI;
                else begin
                    i <= i + 1'b1;
                    raddr <= frame_base + i + 1'b1;
                    state <= CRC_WAIT;
                end
            end
            CRC_HI: begin
                internal_we <= 1'b1;
                internal_addr <= frame_base + total;
                internal_data <= crc[15:8];
                rs_step(crc[15:8]);
                state <= CRC_LO;
            end
            CRC_LO: begin
                internal_we <= 1'b1;
                internal_addr <= frame_base + total + 1'b1;
                internal_data <= crc[7:0];
                rs_step(crc[7:0]);
                total <= total + 2'd2;
                par_left <= 3'd4;
                state <= fec_mode ? PARITY : COBS_START;
            end
            PARITY: if (par_left == 0) state <= COBS_START;
            else begin  // the parity bytes, r3 first, after the CRC
                internal_we <= 1'b1;
                internal_addr <= frame_base + total;
                internal_data <= r3;
                {r3, r2, r1, r0} <= {r2, r1, r0, 8'h00};
                total <= total + 1'b1;
                par_left <= par_left - 1'b1;
            end
            COBS_START: begin
                pos <= 0;
                out_data <= 8'h00;  // leading delimiter
                after_send <= SCAN_START;
                state <= SEND_BYTE;
            end
            SCAN_START: begin
                run <= 0;
                state <= SCAN_READ;
            end
            SCAN_READ: if (group_end >= total || run == 9'd254) state <= SEND_CODE;
            else begin
                raddr <= frame_base + group_end;
                state <= SCAN_WAIT;
            end
            SCAN_WAIT: state <= SCAN_TAKE;
            SCAN_TAKE: if (rdata == 8'h00) state <= SEND_CODE;
            else begin
                run <= run + 1'b1;
                state <= SCAN_READ;
            end
            SEND_CODE: begin
                out_data <= run[7:0] + 1'b1;
                i <= 0;
                after_send <= DATA_READ;
                state <= SEND_BYTE;
            end
            DATA_READ: if (i == run) state <= GROUP_END;
            else begin
                raddr <= frame_base + pos + i;
                state <= DATA_WAIT;
            end
            DATA_WAIT: state <= DATA_TAKE;
            DATA_TAKE: begin
                out_data <= (pos + i == 0) ? version_byte : rdata;
                i <= i + 1'b1;
                after_send <= DATA_READ;
                state <= SEND_BYTE;
            end
            GROUP_END: begin
                // A full group (254 bytes) implies no zero; otherwise the zero that ended
                // the group is skipped. Input ending exactly on a full group is done.
                if (group_end >= total) state <= FINISH;
                else begin
                    pos <= (run == 9'd254) ? group_end : group_end + 1'b1;
                    state <= SCAN_START;
                end
            end
            FINISH: begin
                out_data <= 8'h00;  // closing delimiter
                after_send <= IDLE;
                state <= SEND_BYTE;
            end
            SEND_BYTE: if (!out_busy) begin
                out_start <= 1'b1;
                state <= SEND_WAIT;
            end
            SEND_WAIT: state <= after_send;  // the UART raises busy after this cycle
            default: state <= IDLE;
        endcase
    end
endmodule
