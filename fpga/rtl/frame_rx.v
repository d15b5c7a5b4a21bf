// Frame receiver: COBS-decodes the byte stream as it arrives into the receive buffer and
// checks each frame at its closing delimiter (fpga/ICD.md, "Frame format"). `done` pulses
// once per non-empty run between delimiters, with `status` 0 for a good frame or the NAK
// reason (COBS, BAD_LENGTH, BAD_CRC, BAD_VERSION, OVERSIZE, OVERRUN). The buffer keeps the
// decoded body (header, payload, CRC) for the executor's read port until the next frame.
// Garbage can never wedge it: every delimiter resets the decoder.
//
// Forward error correction (ICD, "Forward error correction"): a run that fails the
// version-1 checks for a reason other than framing may be a version-2 frame, whose body
// ends in four Reed-Solomon parity bytes. The syndromes are computed as the bytes arrive;
// after the delimiter a small sequencer (one shared GF(2^8) multiplier) solves for up to
// two errors (Peterson), finds them (Chien search), computes their values (Forney), then
// reads the body once more, correcting in place and checking the CRC, version and length
// field. Only then does `done` pulse, with `fec` set for a good version-2 frame; otherwise
// the run gets its version-1 reason. Bytes arriving while it works (a few hundred cycles,
// less than one byte time at the board's baud rate) are dropped as an OVERRUN.
`default_nettype none
`include "orbithil_icd.vh"
module frame_rx (
    input  wire       clk,
    input  wire       rst,
    input  wire [7:0] in_data,
    input  wire       in_valid,
    input  wire       hold,       // the executor is busy: data bytes are dropped (OVERRUN)
    input  wire [8:0] raddr,
    output reg  [7:0] rdata,
    output reg        done,
    output reg  [7:0] status,
    output reg  [8:0] body_len,
    output reg  [7:0] seq,
    output reg  [7:0] cmd,
    output reg        fec        // with done: the frame was version 2 (answer in version 2)
);
`include "crc16.vh"
`include "gf256.vh"
    reg [7:0] buffer [0:511];
    integer k;
    initial for (k = 0; k < 512; k = k + 1) buffer[k] = 8'h00;  // as block RAM starts; no X
    reg [8:0] len;           // decoded bytes so far
    reg [8:0] enc_count;     // encoded bytes since the last delimiter
    reg [7:0] remaining;     // data bytes left in this COBS group; 0: next byte is a code
    reg       first_group;
    reg       last_code_ff;
    reg [15:0] crc;
    reg [7:0] version, len_field;
    reg       oversize, overrun;
    reg [7:0] s0, s1, s2, s3;  // RS syndromes of the decoded bytes: S_j = r(alpha^j)

    // --- FEC sequencer state ---
    localparam [4:0] F_IDLE = 0, F_SYN = 1, F_P1 = 2, F_P2 = 3, F_P3 = 4, F_P4 = 5, F_P5 = 6,
                     F_P6 = 7, F_P7 = 8, F_P8 = 9, F_S1 = 10, F_S2 = 11, F_S3 = 12,
                     F_CHIEN = 13, F_FORNEY = 14, F_F1 = 15, F_F2 = 16, F_F3 = 17,
                     F_RD = 18, F_TAKE = 19, F_CHECK = 20, F_FAIL = 21, F_INV_A = 22,
                     F_INV_B = 23, F_CHIEN_START = 24, F_CRC_START = 25;
    reg [4:0] fstate, inv_ret;
    reg [7:0] ma, mb;                    // the shared multiplier's operands
    wire [7:0] mprod = gf_mul(ma, mb);   // their product, one cycle after they are set
    reg [7:0] inv_in, inv_out;
    reg [2:0] inv_count;
    reg [7:0] det, n1, n2, l1, l2, t1, t2, xp, x1, x2, y1, y2;
    reg [1:0] nerr, roots;
    reg [8:0] n, p, pos1, pos2, fi, fraddr;
    reg [15:0] fcrc;
    reg [7:0] fver, fseq, fcmd, flen;
    reg       fix_we;
    reg [8:0] fix_addr;
    reg [7:0] fix_data;
    wire      fbusy = fstate != F_IDLE;

    wire       want_zero = !first_group && !last_code_ff;  // before a new group's data
    wire [7:0] put_byte = (remaining == 0) ? 8'h00 : in_data;
    wire       put = in_valid && in_data != 8'h00 && !hold && !oversize && !fbusy
                     && ((remaining == 0) ? want_zero : 1'b1);

    // The version-1 verdict on the run that a delimiter ends.
    reg [7:0] v1_status;
    always @* begin
        if (overrun) v1_status = `OH_NAK_OVERRUN;
        else if (oversize) v1_status = `OH_NAK_OVERSIZE;
        else if (remaining != 0) v1_status = `OH_NAK_COBS;
        else if (len < 9'd6) v1_status = `OH_NAK_BAD_LENGTH;
        else if (crc != 16'h0000) v1_status = `OH_NAK_BAD_CRC;
        else if (version != `OH_FRAME_VERSION) v1_status = `OH_NAK_BAD_VERSION;
        else if ({1'b0, len_field} != len - 9'd6) v1_status = `OH_NAK_BAD_LENGTH;
        else v1_status = 8'h00;
    end
    wire repairable = (v1_status == `OH_NAK_BAD_CRC || v1_status == `OH_NAK_BAD_LENGTH
                       || v1_status == `OH_NAK_BAD_VERSION)
                      && len >= 9'd10 && len <= `OH_RS_MAX_CODEWORD;

    // The byte the CRC pass takes, with the corrections applied.
    wire [7:0] fixed = rdata ^ ((nerr != 0 && fi == pos1) ? y1 : 8'h00)
                             ^ ((nerr == 2 && fi == pos2) ? y2 : 8'h00);

    always @(posedge clk) begin
        rdata <= buffer[fbusy ? fraddr : raddr];
        if (put && len < `OH_MAX_BODY) buffer[len] <= put_byte;
        else if (fix_we) buffer[fix_addr] <= fix_data;
    end

    always @(posedge clk) begin
        done <= 1'b0;
        fix_we <= 1'b0;
        if (rst) begin
            len <= 0; enc_count <= 0; remaining <= 0; first_group <= 1'b1;
            last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0;
            overrun <= 1'b0; status <= 0; body_len <= 0; seq <= 0; cmd <= 0; fec <= 1'b0;
            version <= 0; len_field <= 0; s0 <= 0; s1 <= 0; s2 <= 0; s3 <= 0;
            fstate <= F_IDLE; inv_ret <= F_IDLE; ma <= 0; mb <= 0; inv_in <= 0; inv_out <= 0;
            inv_count <= 0; det <= 0; n1 <= 0; n2 <= 0; l1 <= 0; l2 <= 0; t1 <= 0; t2 <= 0;
            xp <= 0; x1 <= 0; x2 <= 0; y1 <= 0; y2 <= 0; nerr <= 0; roots <= 0; n <= 0;
            p <= 0; pos1 <= 0; pos2 <= 0; fi <= 0; fraddr <= 0; fcrc <= 0; fver <= 0;
            fseq <= 0; fcmd <= 0; flen <= 0; fix_addr <= 0; fix_data <= 0;
        end else if (fbusy) begin
            if (in_valid) overrun <= 1'b1;  // not listening: the next run is an OVERRUN
            case (fstate)
                F_SYN: if ({s0, s1, s2, s3} == 32'h0) begin
                    nerr <= 0;  // a clean codeword: only the CRC pass
                    fstate <= F_CRC_START;
                end else begin
                    ma <= s0; mb <= s2;
                    fstate <= F_P1;
                end
                // Peterson, two errors: det = S1^2 + S0 S2,
                // L1 = (S1 S2 + S0 S3) / det, L2 = (S2^2 + S1 S3) / det
                F_P1: begin det <= mprod; ma <= s1; mb <= s1; fstate <= F_P2; end
                F_P2: begin det <= det ^ mprod; ma <= s1; mb <= s2; fstate <= F_P3; end
                F_P3: begin n1 <= mprod; ma <= s0; mb <= s3; fstate <= F_P4; end
                F_P4: begin n1 <= n1 ^ mprod; ma <= s2; mb <= s2; fstate <= F_P5; end
                F_P5: begin n2 <= mprod; ma <= s1; mb <= s3; fstate <= F_P6; end
                F_P6: begin
                    n2 <= n2 ^ mprod;
                    if (det != 8'h00) begin
                        inv_in <= det; ma <= det; mb <= det; inv_count <= 0;
                        inv_ret <= F_P7; fstate <= F_INV_A;
                    end else if (s0 != 8'h00) begin  // one error: X1 = S1 / S0
                        inv_in <= s0; ma <= s0; mb <= s0; inv_count <= 0;
                        inv_ret <= F_S1; fstate <= F_INV_A;
                    end else fstate <= F_FAIL;
                end
                F_P7: begin ma <= n1; mb <= inv_out; fstate <= F_P8; end
                F_P8: begin l1 <= mprod; ma <= n2; mb <= inv_out; fstate <= F_S3; end
                // (F_S3 doubles as "take L2" for two errors: nerr tells them apart.)
                F_S1: begin ma <= s1; mb <= inv_out; nerr <= 1; fstate <= F_S2; end
                F_S2: begin  // X1 = S1/S0; check S2 = S1 X1 then S3 = S2 X1
                    l1 <= mprod; l2 <= 8'h00; ma <= s1; mb <= mprod; fstate <= F_S3;
                end
                F_S3: if (nerr == 2'd1) begin
                    if (mprod != s2) fstate <= F_FAIL;
                    else begin ma <= s2; mb <= l1; nerr <= 2'd3; fstate <= F_S3; end
                end else if (nerr == 2'd3) begin
                    if (mprod != s3) fstate <= F_FAIL;
                    else begin nerr <= 2'd1; fstate <= F_CHIEN_START; end
                end else begin
                    l2 <= mprod; nerr <= 2'd2; fstate <= F_CHIEN_START;
                end
                F_CHIEN_START: begin
                    t1 <= l1; t2 <= l2; xp <= 8'h01; p <= 0; roots <= 0;
                    fstate <= F_CHIEN;
                end
                // Lambda(alpha^-p) = 1 + L1 alpha^-p + L2 alpha^-2p for p = 0..n-1; a root
                // at p is an error in byte n-1-p, locator X = alpha^p.
                F_CHIEN: if (p == n) begin
                    fstate <= ({1'b0, roots} == {1'b0, nerr}) ? F_FORNEY : F_FAIL;
                end else begin
                    if ((8'h01 ^ t1 ^ t2) == 8'h00) begin
                        if (roots == 0) begin x1 <= xp; pos1 <= n - 9'd1 - p; end
                        else begin x2 <= xp; pos2 <= n - 9'd1 - p; end
                        if (roots == 2'd2) fstate <= F_FAIL;
                        roots <= roots + 1'b1;
                    end
                    t1 <= gf_mul(t1, 8'h8E);                 // alpha^-1
                    t2 <= gf_mul(gf_mul(t2, 8'h8E), 8'h8E);  // alpha^-2
                    xp <= gf_mul(xp, 8'h02);
                    p <= p + 1'b1;
                end
                // Forney (first root alpha^0): Y1 = (S1 + S0 X2) / (X1 + X2), Y2 = S0 + Y1;
                // one error: Y1 = S0.
                F_FORNEY: if (nerr == 2'd1) begin
                    y1 <= s0; y2 <= 8'h00; fstate <= F_CRC_START;
                end else begin
                    inv_in <= x1 ^ x2; ma <= x1 ^ x2; mb <= x1 ^ x2; inv_count <= 0;
                    inv_ret <= F_F1; fstate <= F_INV_A;
                end
                F_F1: begin ma <= s0; mb <= x2; fstate <= F_F2; end
                F_F2: begin ma <= mprod ^ s1; mb <= inv_out; fstate <= F_F3; end
                F_F3: begin y1 <= mprod; y2 <= s0 ^ mprod; fstate <= F_CRC_START; end
                // inv_out = inv_in^254 = 1/inv_in: r <- r^2 * a six times, then r^2
                // (ma = mb = inv_in on entry: the first square).
                F_INV_A: if (inv_count == 3'd6) begin
                    inv_out <= mprod; fstate <= inv_ret;
                end else begin
                    ma <= mprod; mb <= inv_in; fstate <= F_INV_B;
                end
                F_INV_B: begin
                    ma <= mprod; mb <= mprod; inv_count <= inv_count + 1'b1; fstate <= F_INV_A;
                end
                // Read the body again (header..CRC), correcting in place and checking it.
                F_CRC_START: begin
                    fcrc <= `OH_CRC16_INIT; fi <= 0; fraddr <= 0; fstate <= F_RD;
                end
                F_RD: fstate <= F_TAKE;  // rdata holds buffer[fi] next cycle
                F_TAKE: begin
                    fcrc <= crc16_byte(fcrc, fixed);
                    if (fixed != rdata) begin
                        fix_we <= 1'b1; fix_addr <= fi; fix_data <= fixed;
                    end
                    case (fi)
                        9'd0: fver <= fixed;
                        9'd1: fseq <= fixed;
                        9'd2: fcmd <= fixed;
                        9'd3: flen <= fixed;
                        default: ;
                    endcase
                    if (fi + 9'd5 == n) fstate <= F_CHECK;
                    else begin
                        fi <= fi + 1'b1; fraddr <= fi + 1'b1; fstate <= F_RD;
                    end
                end
                F_CHECK: begin
                    done <= 1'b1;
                    s0 <= 0; s1 <= 0; s2 <= 0; s3 <= 0;
                    if (fcrc == 16'h0000 && fver == `OH_FEC_VERSION
                        && {1'b0, flen} == n - 9'd10) begin
                        status <= 8'h00; fec <= 1'b1; body_len <= n - 9'd4;
                        seq <= fseq; cmd <= fcmd;
                    end
                    fstate <= F_IDLE;
                end
                F_FAIL: begin
                    done <= 1'b1;
                    s0 <= 0; s1 <= 0; s2 <= 0; s3 <= 0;
                    fstate <= F_IDLE;
                end
                default: fstate <= F_IDLE;
            endcase
        end else if (in_valid && in_data == 8'h00) begin
            if (enc_count != 0 || overrun) begin
                status <= v1_status;
                body_len <= len;
                fec <= 1'b0;
                if (len < 9'd2) seq <= 8'h00;
                if (len < 9'd3) cmd <= 8'h00;
                if (repairable) begin  // perhaps a version-2 frame: the sequencer decides
                    n <= len; nerr <= 0; fstate <= F_SYN;
                end else done <= 1'b1;
            end
            len <= 0; enc_count <= 0; remaining <= 0; first_group <= 1'b1;
            last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0; overrun <= 1'b0;
            if (!((enc_count != 0 || overrun) && repairable)) begin  // else the sequencer's
                s0 <= 0; s1 <= 0; s2 <= 0; s3 <= 0;
            end
        end else if (in_valid && hold) begin
            overrun <= 1'b1;
        end else if (in_valid && !oversize) begin
            enc_count <= enc_count + 1'b1;
            if (enc_count >= `OH_MAX_ENCODED) oversize <= 1'b1;
            if (remaining == 0) begin  // a code byte
                remaining <= in_data - 1'b1;
                last_code_ff <= in_data == 8'hFF;
                first_group <= 1'b0;
            end else begin
                remaining <= remaining - 1'b1;
            end
            if (put) begin
                if (len >= `OH_MAX_BODY) oversize <= 1'b1;
                crc <= crc16_byte(crc, put_byte);
                s0 <= s0 ^ put_byte;
                s1 <= gf_mul(s1, 8'h02) ^ put_byte;
                s2 <= gf_mul(s2, 8'h04) ^ put_byte;
                s3 <= gf_mul(s3, 8'h08) ^ put_byte;
                len <= len + 1'b1;
                case (len)
                    9'd0: version <= put_byte;
                    9'd1: seq <= put_byte;
                    9'd2: cmd <= put_byte;
                    9'd3: len_field <= put_byte;
                    default: ;
                endcase
            end
        end
    end
endmodule
