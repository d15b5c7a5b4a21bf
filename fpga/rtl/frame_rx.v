// Frame receiver: COBS-decodes the byte stream as it arrives into the receive buffer and
// checks each frame at its closing delimiter (fpga/ICD.md, "Frame format"). `done` pulses
// once per non-empty run between delimiters, with `status` 0 for a good frame or the NAK
// reason (COBS, BAD_LENGTH, BAD_CRC, BAD_VERSION, OVERSIZE, OVERRUN). The buffer keeps the
// decoded body (header, payload, CRC) for the executor's read port until the next frame.
// Garbage can never wedge it: every delimiter resets the decoder.
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
    output reg  [7:0] cmd
);
`include "crc16.vh"
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

    wire       want_zero = !first_group && !last_code_ff;  // before a new group's data
    wire [7:0] put_byte = (remaining == 0) ? 8'h00 : in_data;
    wire       put = in_valid && in_data != 8'h00 && !hold && !oversize
                     && ((remaining == 0) ? want_zero : 1'b1);

    always @(posedge clk) begin
        rdata <= buffer[raddr];
        if (put && len < `OH_MAX_BODY) buffer[len] <= put_byte;
    end

    always @(posedge clk) begin
        done <= 1'b0;
        if (rst) begin
            len <= 0; enc_count <= 0; remaining <= 0; first_group <= 1'b1;
            last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0;
            overrun <= 1'b0; status <= 0; body_len <= 0; seq <= 0; cmd <= 0;
            version <= 0; len_field <= 0;
        end else if (in_valid && in_data == 8'h00) begin
            if (enc_count != 0 || overrun) begin
                done <= 1'b1;
                body_len <= len;
                if (overrun) status <= `OH_NAK_OVERRUN;
                else if (oversize) status <= `OH_NAK_OVERSIZE;
                else if (remaining != 0) status <= `OH_NAK_COBS;
                else if (len < 9'd6) status <= `OH_NAK_BAD_LENGTH;
                else if (crc != 16'h0000) status <= `OH_NAK_BAD_CRC;
                else if (version != `OH_FRAME_VERSION) status <= `OH_NAK_BAD_VERSION;
                else if ({1'b0, len_field} != len - 9'd6) status <= `OH_NAK_BAD_LENGTH;
                else status <= 8'h00;
                if (len < 9'd2) seq <= 8'h00;
                if (len < 9'd3) cmd <= 8'h00;
            end
            len <= 0; enc_count <= 0; remaining <= 0; first_group <= 1'b1;
            last_code_ff <= 1'b0; crc <= `OH_CRC16_INIT; oversize <= 1'b0; overrun <= 1'b0;
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
