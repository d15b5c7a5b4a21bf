// Frame transmitter: the executor writes a body (header and payload) into the transmit
// buffer at `base` and pulses `send` with its length; this appends the CRC-16 and sends
// 00 | COBS(body, crc) | 00 through the UART transmitter. COBS needs each group's length
// before its bytes, so every group is scanned first, then sent. Reads of the buffer are
// synchronous: an address is set, its byte is there two states later.
// A body whose version byte is 2 goes out with forward error correction (fpga/ICD.md,
// "Forward error correction"): four Reed-Solomon parity bytes after the CRC, two for each
// of two interleaved codewords (body byte i in codeword i mod 2). Two LFSRs take the bytes
// as the CRC pass reads them; since the bytes alternate between the codewords, one set of
// logic serves both: `p*` holds the LFSR of the next byte's codeword, `q*` the other's,
// and they trade places after every byte.
// PARITY=1 (the hardened build): each buffered byte keeps the parity bit the executor made
// with it (`wpar`), and the CRC pass checks it as it reads the byte: a flip found there
// spoils the CRC (sent inverted, so the host sees BAD_CRC and resends) and pulses
// `par_err` (the executor then forgets the stored answer). A flip after the CRC pass is in
// bytes the CRC already covers. So no bit of an answer is unprotected on its way out.
`default_nettype none
`include "orbithil_icd.vh"
module frame_tx #(
    parameter integer FEC = 1,    // 0: bodies go out as they are, never with parity
    parameter integer PARITY = 0  // 1: parity on the buffer (HARDEN=1)
) (
    input  wire       clk,
    input  wire       rst,
    input  wire [8:0] waddr,
    input  wire [7:0] wdata,
    input  wire       wpar,       // PARITY: wdata's parity as the executor made it
    input  wire       we,
    input  wire       send,
    input  wire [8:0] base,
    input  wire [8:0] len,
    output wire       busy,
    output reg        par_err,    // PARITY: pulses when the CRC pass finds a flipped byte
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
                     RS_PARITY = 17, COBS_START = 18;
    reg [4:0] state, after_send;
    localparam integer W = (PARITY != 0) ? 9 : 8;  // a byte and, hardened, its parity bit
    reg [W-1:0] buffer [0:511];
    integer k;
    initial for (k = 0; k < 512; k = k + 1) buffer[k] = {W{1'b0}};  // as block RAM starts
    reg [8:0] raddr;
    reg [W-1:0] rword;
    wire [7:0] rdata = rword[7:0];
    wire       rpar_bad = PARITY != 0 && ^rword;
    reg        spoil;                  // a flipped byte was found: the CRC goes out inverted
    function automatic [W-1:0] with_par(input [7:0] b, input p);
        with_par = (PARITY != 0) ? {p, b} : b;
    endfunction
    reg [8:0] frame_base, total, pos, i;
    reg [8:0] run;
    reg [15:0] crc;
    reg        internal_we;
    reg [8:0]  internal_addr;
    reg [7:0]  internal_data;
    reg        fec_mode;               // the body's version byte is 2
    reg [7:0]  p1, p0, q1, q0;         // RS parity LFSRs: next byte's codeword, the other
    reg [2:0]  par_left;
    wire [15:0] crc_out = spoil ? ~crc : crc;
    wire [7:0] rs_in = (state == CRC_TAKE) ? rdata : (state == CRC_HI) ? crc_out[15:8]
                                                                      : crc_out[7:0];
    wire [7:0] rs_fb = rs_in ^ p1;
    wire       rs_step = state == CRC_TAKE || state == CRC_HI || state == CRC_LO;

    assign busy = state != IDLE || out_busy;  // until the last byte has left the UART
    wire [8:0] group_end = pos + run;

    always @(posedge clk) begin
        rword <= buffer[raddr];
        if (internal_we) buffer[internal_addr] <= with_par(internal_data, ^internal_data);
        else if (we && state == IDLE) buffer[waddr] <= with_par(wdata, wpar);
    end

    // x^2 + G1 x + G0 (hal/codec/fec.py): after the body, {p1, q1, p0, q0} are the parity
    // bytes in the order they follow the CRC; RS_PARITY shifts them out p1 first.
    always @(posedge clk) begin
        if (rst || state == IDLE) begin
            p1 <= 0; p0 <= 0; q1 <= 0; q0 <= 0;
        end else if (rs_step) begin
            {p1, p0} <= {q1, q0};
            q1 <= p0 ^ gf_mul(rs_fb, `OH_RS_G1);
            q0 <= gf_mul(rs_fb, `OH_RS_G0);
        end else if (state == RS_PARITY) begin
            {p1, q1, p0, q0} <= {q1, p0, q0, 8'h00};
        end
    end

    always @(posedge clk) begin
        out_start <= 1'b0;
        internal_we <= 1'b0;
        par_err <= 1'b0;
        if (rst) begin
            spoil <= 1'b0;
            state <= IDLE; after_send <= IDLE; raddr <= 0; frame_base <= 0; total <= 0;
            pos <= 0; i <= 0; run <= 0; crc <= `OH_CRC16_INIT; out_data <= 0;
            internal_addr <= 0; internal_data <= 0; fec_mode <= 1'b0; par_left <= 0;
        end else case (state)
            IDLE: if (send) begin
                frame_base <= base;
                total <= len;
                i <= 0;
                crc <= `OH_CRC16_INIT;
                spoil <= 1'b0;
                raddr <= base;
                state <= (len == 0) ? CRC_HI : CRC_WAIT;
            end
            CRC_WAIT: state <= CRC_TAKE;
            CRC_TAKE: begin  // rdata is body[i]
                crc <= crc16_byte(crc, rdata);
                if (rpar_bad && !spoil) begin
                    spoil <= 1'b1;
                    par_err <= 1'b1;
                end
                if (i == 0) fec_mode <= FEC != 0 && rdata == `OH_FEC_VERSION;
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
                internal_data <= crc_out[15:8];
                state <= CRC_LO;
            end
            CRC_LO: begin
                internal_we <= 1'b1;
                internal_addr <= frame_base + total + 1'b1;
                internal_data <= crc_out[7:0];
                total <= total + 2'd2;
                par_left <= 3'd4;
                state <= fec_mode ? RS_PARITY : COBS_START;
            end
            RS_PARITY: if (par_left == 0) state <= COBS_START;
            else begin  // the parity bytes after the CRC
                internal_we <= 1'b1;
                internal_addr <= frame_base + total;
                internal_data <= (FEC != 0) ? p1 : 8'h00;
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
                out_data <= rdata;
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
