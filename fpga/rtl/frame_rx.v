// Frame receiver: COBS-decodes the byte stream as it arrives into the receive buffer and
// checks each frame at its closing delimiter (fpga/ICD.md, "Frame format"). `done` pulses
// once per non-empty run between delimiters, with `status` 0 for a good frame or the NAK
// reason (COBS, BAD_LENGTH, BAD_CRC, BAD_VERSION, OVERSIZE, OVERRUN). The buffer keeps the
// decoded body (header, payload, CRC) for the executor's read port until the next frame.
// Garbage can never wedge it: every delimiter resets the decoder.
//
// Forward error correction (ICD, "Forward error correction"): a run that fails the
// version-1 checks for a reason other than framing may be a version-2 frame: its bytes are
// two interleaved Reed-Solomon codewords (byte i in codeword i mod 2), each ending in two
// parity bytes. Both codewords' syndromes are computed as the bytes arrive. After the
// delimiter, one damaged byte per codeword is located: a walk from the last byte to the
// first, one byte per cycle, finds the byte alpha^p from its codeword's end with
// S0 * alpha^p = S1 (one constant multiplier per codeword, no division). Then the body is
// read once more, corrected in place, and its CRC, version and length field checked. Only
// then does `done` pulse, with `fec` set for a good version-2 frame; otherwise the run gets
// its version-1 reason. Bytes arriving meanwhile (at most ~800 cycles, less than one byte
// time at the board's baud rate) are dropped as an OVERRUN.
//
// Two buffers (banks): a frame is received into one while the executor works on the frame
// in the other, so a frame arriving while the chip answers is taken, not lost. A frame
// complete while the executor is busy waits (its verdict held) and goes to the executor
// when it is free; only bytes arriving while one frame waits and another is being answered
// are dropped (OVERRUN), and a run that ends then is lost without an answer.
//
// PARITY=1 (the hardened build): every buffered byte carries an even-parity bit written
// with it, as the CRC takes it, and the executor checks it as it reads the byte (`rpar_err`);
// the verdict handed to the executor (status, length, seq, cmd, version flag) carries a
// parity bit too (`vpar`), so no bit of a received command is held unprotected between the
// CRC check and the executor.
`default_nettype none
`include "orbithil_icd.vh"
module frame_rx #(
    parameter integer FEC = 1,    // 0: no version-2 frames (they get their version-1 reason)
    parameter integer PARITY = 0  // 1: parity on the buffers and the verdict (HARDEN=1)
) (
    input  wire       clk,
    input  wire       rst,
    input  wire [7:0] in_data,
    input  wire       in_valid,
    input  wire       hold,       // the executor is busy (with the other bank, or idle soon)
    input  wire [8:0] raddr,
    output wire [7:0] rdata,
    output wire       rpar_err,   // PARITY: the byte at rdata fails its parity
    output reg        done,
    output reg  [7:0] status,
    output reg  [8:0] body_len,
    output reg  [7:0] seq,
    output reg  [7:0] cmd,
    output reg        fec,       // with done: the frame was version 2 (answer in version 2)
    output reg        vpar,      // PARITY: even parity over status, body_len, seq, cmd, fec
    output reg  [1:0] fec_fixed  // with a good version-2 frame: bytes corrected (0..2)
);
`include "crc16.vh"
`include "gf256.vh"
    localparam integer W = (PARITY != 0) ? 9 : 8;  // a byte and, hardened, its parity bit
    reg [W-1:0] buffer0 [0:511];
    reg [W-1:0] buffer1 [0:511];
    integer k;
    initial for (k = 0; k < 512; k = k + 1) begin  // as block RAM starts; no X
        buffer0[k] = {W{1'b0}};
        buffer1[k] = {W{1'b0}};
    end
    reg       wbank;         // the bank being received into
    reg       xbank;         // the bank of the frame handed to the executor
    // A complete frame waiting for the executor: its verdict is already on the outputs
    // (status .. vpar: the executor took the previous one with its `done`), its bank here.
    reg       v_pending, v_bank;
    reg [7:0] r_seq, r_cmd;  // the header bytes of the run being received
    wire      blocked = v_pending && hold;  // both banks taken: data bytes are dropped
    reg [8:0] len;           // decoded bytes so far
    reg [8:0] enc_count;     // encoded bytes since the last delimiter
    reg [7:0] remaining;     // data bytes left in this COBS group; 0: next byte is a code
    reg       first_group;
    reg       last_code_ff;
    reg [15:0] crc;
    reg [7:0] version, len_field;
    reg       oversize, overrun;
    reg [7:0] sa0, sa1, sb0, sb1;  // syndromes S0, S1 of codewords A (even) and B (odd)

    // --- FEC sequencer ---
    localparam [2:0] F_IDLE = 0, F_START = 1, F_SEARCH = 2, F_RD = 3, F_TAKE = 4,
                     F_CHECK = 5, F_DONE = 6;
    reg [2:0] fstate;
    reg [7:0] acc_a, acc_b;       // S0 * alpha^p, p = the search's distance from the end
    reg [8:0] pos_a, pos_b;       // where each codeword's damaged byte is
    reg       need_a, need_b, fix_a, fix_b;
    reg [8:0] fi;                 // the search walks it down from len - 1, the pass up
    reg [7:0] fseq, fcmd;
    reg       fix_we;
    reg [8:0] fix_addr;
    reg [7:0] fix_data;
    wire      fbusy = FEC != 0 && fstate != F_IDLE;  // `len` holds the run's length meanwhile

    wire       want_zero = !first_group && !last_code_ff;  // before a new group's data
    wire [7:0] put_byte = (remaining == 0) ? 8'h00 : in_data;
    wire       put = in_valid && in_data != 8'h00 && !blocked && !oversize && !fbusy
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
                      && len >= 9'd10 && FEC != 0;

    // Both banks' read ports: the executor's bank at raddr, the sequencer's at fi.
    reg  [W-1:0] rd0, rd1;
    wire [8:0]   a0 = (fbusy && !wbank) ? fi : raddr;
    wire [8:0]   a1 = (fbusy && wbank) ? fi : raddr;
    wire [W-1:0] xword = xbank ? rd1 : rd0;
    wire [7:0]   fdata = wbank ? rd1[7:0] : rd0[7:0];  // the sequencer's byte
    assign rdata = xword[7:0];
    assign rpar_err = PARITY != 0 && ^xword;
    // The byte the CRC pass takes, with the corrections applied (the error value is S0).
    wire [7:0] fixed = fdata ^ ((fix_a && fi == pos_a) ? sa0 : 8'h00)
                             ^ ((fix_b && fi == pos_b) ? sb0 : 8'h00);
    // One CRC for both passes: the bytes arriving, or the corrected body.
    wire [15:0] crc_next = crc16_byte(crc, fbusy ? fixed : put_byte);

    wire         wr_en = (put && len < `OH_MAX_BODY) || fix_we;
    wire [8:0]   wr_addr = (put && len < `OH_MAX_BODY) ? len : fix_addr;
    wire [7:0]   wr_byte = (put && len < `OH_MAX_BODY) ? put_byte : fix_data;
    wire [W-1:0] wr_word;
    generate
        if (PARITY != 0) begin : g_par
            assign wr_word = {^wr_byte, wr_byte};
        end else begin : g_nopar
            assign wr_word = wr_byte;
        end
    endgenerate
    always @(posedge clk) begin
        rd0 <= buffer0[a0];
        rd1 <= buffer1[a1];
        if (wr_en && !wbank) buffer0[wr_addr] <= wr_word;
        if (wr_en && wbank) buffer1[wr_addr] <= wr_word;
    end

    // Even parity over a verdict (PARITY=1; 0 otherwise).
    function automatic vparity(input [7:0] st, input [8:0] ln, input [7:0] sq, input [7:0] cm,
                               input f);
        vparity = (PARITY != 0) && ^{st, ln, sq, cm, f};
    endfunction

    always @(posedge clk) begin
        done <= 1'b0;
        fix_we <= 1'b0;
        fec_fixed <= 2'd0;
        if (rst) begin
            len <= 0; enc_count <= 0; remaining <= 0; first_group <= 1'b1;
            last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0;
            overrun <= 1'b0; status <= 0; body_len <= 0; seq <= 0; cmd <= 0; fec <= 1'b0;
            vpar <= 1'b0;
            version <= 0; len_field <= 0; sa0 <= 0; sa1 <= 0; sb0 <= 0; sb1 <= 0;
            fstate <= F_IDLE; acc_a <= 0; acc_b <= 0; pos_a <= 0; pos_b <= 0;
            need_a <= 1'b0; need_b <= 1'b0; fix_a <= 1'b0; fix_b <= 1'b0; fi <= 0;
            fseq <= 0; fcmd <= 0; fix_addr <= 0; fix_data <= 0;
            wbank <= 1'b0; xbank <= 1'b0; v_pending <= 1'b0; v_bank <= 1'b0;
            r_seq <= 0; r_cmd <= 0;
        end else begin
            // A waiting verdict goes to the executor when it is free (`hold` low; not in
            // the cycle after a `done`, when the executor has not yet raised it).
            if (v_pending && !hold && !done) begin
                done <= 1'b1;
                xbank <= v_bank;
                v_pending <= 1'b0;
            end
            if (fbusy) begin
                // Not listening: a data byte makes its run an OVERRUN. A delimiter carries
                // nothing: an empty run is ignored as anywhere else (ICD).
                if (in_valid && in_data != 8'h00) overrun <= 1'b1;
                case (fstate)
                    // A codeword with both syndromes 0 is whole; with one of them 0 it has
                    // more than one damaged byte; else the search finds its damaged byte.
                    F_START: begin
                        need_a <= sa0 != 8'h00; need_b <= sb0 != 8'h00;
                        fix_a <= 1'b0; fix_b <= 1'b0;
                        acc_a <= sa0; acc_b <= sb0;
                        fi <= len - 9'd1;
                        if ((sa0 == 8'h00) != (sa1 == 8'h00) || (sb0 == 8'h00) != (sb1 == 8'h00))
                            fstate <= F_DONE;
                        else fstate <= F_SEARCH;
                    end
                    // Byte fi, in codeword fi mod 2, is alpha^p from that codeword's end; it
                    // is the damaged one when S0 alpha^p = S1 (the error value is S0).
                    F_SEARCH: begin
                        if (fi[0]) begin
                            if (acc_b == sb1 && need_b && !fix_b) begin fix_b <= 1'b1; pos_b <= fi; end
                            acc_b <= gf_mul(acc_b, 8'h02);
                        end else begin
                            if (acc_a == sa1 && need_a && !fix_a) begin fix_a <= 1'b1; pos_a <= fi; end
                            acc_a <= gf_mul(acc_a, 8'h02);
                        end
                        if (fi == 9'd0) fstate <= F_RD;  // fi = 0: the pass reads from the start
                        else fi <= fi - 1'b1;
                        crc <= `OH_CRC16_INIT;
                    end
                    F_RD: fstate <= (need_a != fix_a || need_b != fix_b) ? F_DONE : F_TAKE;
                    F_TAKE: begin  // fdata is byte fi: header..CRC, corrected, through the CRC
                        crc <= crc_next;
                        if (fixed != fdata) begin
                            fix_we <= 1'b1; fix_addr <= fi; fix_data <= fixed;
                        end
                        case (fi)
                            9'd0: version <= fixed;
                            9'd1: fseq <= fixed;
                            9'd2: fcmd <= fixed;
                            9'd3: len_field <= fixed;
                            default: ;
                        endcase
                        if (fi + 9'd5 == len) fstate <= F_CHECK;
                        else begin
                            fi <= fi + 1'b1; fstate <= F_RD;
                        end
                    end
                    F_CHECK: begin
                        if (crc == 16'h0000 && version == `OH_FEC_VERSION
                            && {1'b0, len_field} == len - 9'd10) begin
                            status <= 8'h00; fec <= 1'b1; body_len <= len - 9'd4;
                            seq <= fseq; cmd <= fcmd;
                            vpar <= vparity(8'h00, len - 9'd4, fseq, fcmd, 1'b1);
                            fec_fixed <= {1'b0, fix_a} + {1'b0, fix_b};  // parity bytes too
                        end
                        fstate <= F_DONE;
                    end
                    F_DONE: begin  // the verdict is on the outputs; ready for the next run
                        v_pending <= 1'b1;
                        wbank <= ~wbank;
                        len <= 0; crc <= `OH_CRC16_INIT;
                        sa0 <= 0; sa1 <= 0; sb0 <= 0; sb1 <= 0;
                        fstate <= F_IDLE;
                    end
                    default: fstate <= F_IDLE;
                endcase
            end else if (in_valid && in_data == 8'h00) begin
                // A run ends. With a verdict still waiting there is no room for this one:
                // it is lost (its data bytes were dropped already, see `blocked`).
                if ((enc_count != 0 || overrun) && !v_pending) begin
                    status <= v1_status;
                    body_len <= len;
                    fec <= 1'b0;
                    seq <= (len < 9'd2) ? 8'h00 : r_seq;
                    cmd <= (len < 9'd3) ? 8'h00 : r_cmd;
                    vpar <= vparity(v1_status, len, (len < 9'd2) ? 8'h00 : r_seq,
                                     (len < 9'd3) ? 8'h00 : r_cmd, 1'b0);
                    v_bank <= wbank;
                    if (repairable) fstate <= F_START;  // perhaps version 2: the sequencer decides
                    else begin
                        v_pending <= 1'b1;
                        wbank <= ~wbank;
                    end
                end
                if (!((enc_count != 0 || overrun) && !v_pending && repairable)) begin
                    len <= 0; sa0 <= 0; sa1 <= 0; sb0 <= 0; sb1 <= 0;  // else the sequencer's
                end
                enc_count <= 0; remaining <= 0; first_group <= 1'b1;
                last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0; overrun <= 1'b0;
            end else if (in_valid && blocked) begin
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
                    crc <= crc_next;
                    if (FEC == 0) ;
                    else if (len[0]) begin  // codeword B
                        sb0 <= sb0 ^ put_byte;
                        sb1 <= gf_mul(sb1, 8'h02) ^ put_byte;
                    end else begin
                        sa0 <= sa0 ^ put_byte;
                        sa1 <= gf_mul(sa1, 8'h02) ^ put_byte;
                    end
                    len <= len + 1'b1;
                    case (len)
                        9'd0: version <= put_byte;
                        9'd1: r_seq <= put_byte;
                        9'd2: r_cmd <= put_byte;
                        9'd3: len_field <= put_byte;
                        default: ;
                    endcase
                end
            end
        end
    end
endmodule
