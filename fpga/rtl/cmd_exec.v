// Command executor (fpga/ICD.md, "Commands"). For each frame from frame_rx:
// - a bad frame is answered with a NAK carrying the reason, built in the transmit buffer's
//   second region (at NAK_BASE) so the last response stays intact;
// - a good frame whose sequence number equals the last executed one is a retry: the stored
//   response is sent again and nothing is executed twice;
// - otherwise the command runs and its response (ACK = cmd | 0x80, or a NAK with a reason)
//   is written at 0 and sent, and remembered for retries.
// Every answer to a good frame goes out in that frame's version (1, or 2 with FEC: frame_tx
// adds the parity when the version byte says 2), a retry's too (its stored response gets
// the retry's version byte); a NAK for a bad frame goes out as version 1.
// `busy` says a command is running: frame_rx keeps the next frame waiting meanwhile.
//
// PARITY=1 (the hardened build): nothing of a command or its answer is held without a
// check between the receiver's CRC and the transmitter's. Each request byte is read with
// its parity (`rx_rpar_err`) and the frame's verdict with its own (`fr_vpar`); the request
// bytes held here (`args`) and the header fields (seq, cmd, length) carry parity bits, as do
// the answer's bytes on their way to the transmit buffer (`obuf`), written there with the
// parity they were made with (`tx_wpar`), so the transmitter finds a flip on the way. A
// mismatch on the request side is answered with NAK PARITY and not remembered (a resend
// executes); one the transmitter finds (`tx_par_err`) makes it spoil the answer's CRC and
// here forgets the stored answer, so the host's resend executes again.
`default_nettype none
`include "orbithil_icd.vh"
module cmd_exec #(
    parameter integer HARDEN = 1,
    parameter integer MEM_WORDS = 2048,
    parameter integer AW = 11,
    parameter integer FEC = 1,
    parameter integer PARITY = 0,
    parameter integer INJECT = 1  // 0: INJECT is answered NAK NOT_IN_BUILD (flight bitstreams)
) (
    input  wire          clk,
    input  wire          rst,
    // frame_rx
    input  wire          fr_done,
    input  wire [7:0]    fr_status,
    input  wire [8:0]    fr_len,
    input  wire [7:0]    fr_seq,
    input  wire [7:0]    fr_cmd,
    input  wire          fr_fec,          // the frame was version 2: answer in version 2
    input  wire          fr_vpar,         // PARITY: even parity over the five fields above
    output reg  [8:0]    rx_raddr,
    input  wire [7:0]    rx_rdata,
    input  wire          rx_rpar_err,     // PARITY: rx_rdata fails its parity
    output wire          busy,
    // frame_tx
    output reg  [8:0]    tx_waddr,
    output reg  [7:0]    tx_wdata,
    output reg           tx_wpar,         // PARITY: tx_wdata's parity as it was made
    output reg           tx_we,
    output reg           tx_send,
    output reg  [8:0]    tx_base,
    output reg  [8:0]    tx_len,
    input  wire          tx_busy,
    input  wire          tx_par_err,      // PARITY: the transmitter found a flipped byte
    // register file (the top decodes addresses)
    output reg  [7:0]    reg_addr,
    input  wire [31:0]   reg_rdata,
    input  wire          reg_readable,
    input  wire          reg_writable,
    input  wire          reg_is_rw,       // a TMR register: injectable
    output reg           reg_we,
    output wire [31:0]   reg_wdata,       // = args[31:0]: WRITE_REG's and SCRUB's value
    output reg           reg_inj,
    output reg  [4:0]    reg_inj_bit,
    output reg  [1:0]    reg_inj_copy,
    // memory
    output reg           mem_req,
    output reg           mem_we,
    output reg  [AW-1:0] mem_addr,
    output wire [31:0]   mem_wdata,       // = args[31:0]: WRITE_MEM's word
    input  wire          mem_ack,
    input  wire [31:0]   mem_rdata,
    input  wire [1:0]    mem_rstatus,
    output reg           mem_inj,
    output reg  [5:0]    mem_inj_bit,
    // MAC engine
    output reg           job_start,
    output wire [15:0]   job_w,           // RUN_JOB's arguments, straight from args (the
    output wire [15:0]   job_x,           // MAC engine takes them at job_start; args keep
    output wire [15:0]   job_y,           // their parity until then)
    output wire [7:0]    job_rows,
    output wire [7:0]    job_cols,
    input  wire          job_done,
    input  wire [7:0]    job_status,
    input  wire [31:0]   job_cycles,
    // misc
    input  wire          armed,
    output reg           frame_ok,
    output reg           frame_bad,
    output reg           parity_err,      // pulses for each parity mismatch found here
    output reg           soft_reset
);
    localparam [8:0] NAK_BASE = 9'd384;
    localparam [7:0] ICD8 = `OH_ICD_VERSION;
    localparam [7:0] FLAGS8 = {5'h0, INJECT != 0, FEC != 0, HARDEN != 0};  // PING's flags
    localparam [15:0] MEM_WORDS16 = MEM_WORDS;
    localparam integer MEM_BITS = (HARDEN != 0) ? 39 : 32;
    localparam [4:0] IDLE = 0, RD = 1, RD_WAIT = 2, RD_TAKE = 3, DISPATCH = 4, EMIT = 5,
                     FINISH = 6, SEND = 7, WAIT_TX = 8, REG_RB = 9, MEM_NEXT = 10,
                     MEM_WAIT = 11, WMEM_NEXT = 12, WMEM_WORD = 13, WMEM_WAIT = 14,
                     JOB_WAIT = 15, TELEM_NEXT = 16, TELEM_TAKE = 17, RESET_WAIT = 18,
                     NAK_CMD = 19, INJ_WAIT = 20, FRAME_NAK = 21, REG_WRITE = 22,
                     REG_SETTLE = 23, FRAME_NAK_CMD = 24, PING_REST = 25;
    reg [4:0] state, ret;
    reg [7:0] seq, cmd, plen, rcode;
    reg       hdr_par;     // PARITY: even parity over seq, cmd, plen
    reg [63:0] args;       // request bytes, most recent in the low byte
    reg [7:0] args_par;    // PARITY: each args byte's parity, as read with it
    reg [8:0] ridx;        // next request byte to read (buffer index)
    reg [3:0] rcount;      // request bytes still to read
    reg [39:0] obuf;       // bytes to write (up to 5), first in the high byte
    reg [4:0] obuf_par;    // PARITY: each obuf byte's parity, made as it was loaded
    reg       forget;      // the answer being made is not remembered for retries
    reg [3:0] olen;
    reg [8:0] widx;        // next transmit-buffer index
    reg [7:0] resp_len;    // payload bytes written so far
    reg [7:0] reason;
    reg [15:0] nak_extra;
    reg        nak_has_extra;
    reg [7:0] count, rq_count;
    reg [15:0] rq_addr;
    reg [15:0] maddr;
    reg [7:0] last_seq;
    reg       ans_fec;     // the request was version 2: so is its answer
    reg       last_valid;
    reg [8:0] last_len;
    reg [7:0] treg;
    reg       reset_after;

    assign busy = state != IDLE;
    // Operands go out straight from the request bytes (no second, unprotected copy).
    assign reg_wdata = args[31:0];
    assign mem_wdata = args[31:0];
    assign {job_w, job_x, job_y, job_rows, job_cols} = args;

    wire [8:0] body_len = fr_len;
    wire [15:0] a_addr16 = args[23:8];   // READ_MEM / WRITE_MEM: addr u16, count u8
    wire [7:0]  a_count = args[7:0];
    wire [16:0] a_end = {1'b0, a_addr16} + a_count;

    // Parity (PARITY=1; every check is 0 otherwise).
    function automatic [7:0] byte_par(input [63:0] b);
        integer j;
        for (j = 0; j < 8; j = j + 1) byte_par[j] = ^b[8*j +: 8];
    endfunction
    wire args_bad = PARITY != 0 && byte_par(args) != args_par;
    wire hdr_bad = PARITY != 0 && (^{seq, cmd, plen, hdr_par});
    wire fr_par_bad = PARITY != 0 && (^{fr_status, fr_len, fr_seq, fr_cmd, fr_fec, fr_vpar});

    // emit up to 5 bytes of obuf, then go to `next`. The bytes go through one variable
    // (`load`, taken into obuf after the case below) so that their parity is made by one
    // tree on the one mux's output, not one per caller.
    reg [39:0] load;
    reg        loading;
    task start_emit(input [39:0] bytes, input [3:0] n, input [4:0] next);
        begin
            load = bytes;
            loading = 1'b1;
            olen <= n;
            ret <= next;
            state <= EMIT;
        end
    endtask

    task nak(input [7:0] why);
        begin
            reason <= why;
            nak_has_extra <= 1'b0;
            state <= NAK_CMD;
        end
    endtask

    // A flipped bit found in the request: NAK PARITY, not remembered (a resend executes).
    task parity_nak;
        begin
            parity_err <= 1'b1;
            forget <= 1'b1;
            nak(`OH_NAK_PARITY);
        end
    endtask

    always @(posedge clk) begin
        tx_we <= 1'b0;
        tx_send <= 1'b0;
        reg_we <= 1'b0;
        reg_inj <= 1'b0;
        mem_req <= 1'b0;
        mem_inj <= 1'b0;
        job_start <= 1'b0;
        frame_ok <= 1'b0;
        frame_bad <= 1'b0;
        parity_err <= 1'b0;
        soft_reset <= 1'b0;
        load = 40'h0;
        loading = 1'b0;
        if (tx_par_err && !rst) begin  // the answer went out spoilt: a resend executes again
            last_valid <= 1'b0;
            parity_err <= 1'b1;
        end
        if (rst) begin
            state <= IDLE; ret <= IDLE; seq <= 0; cmd <= 0; plen <= 0; rcode <= 0; args <= 0;
            ridx <= 0; rcount <= 0; obuf <= 0; olen <= 0; widx <= 0; resp_len <= 0;
            reason <= 0; nak_extra <= 0; nak_has_extra <= 1'b0; count <= 0; rq_count <= 0; rq_addr <= 0;
            maddr <= 0; last_seq <= 0; last_valid <= 1'b0; last_len <= 0; treg <= 0;
            rx_raddr <= 0; tx_waddr <= 0; tx_wdata <= 0; tx_base <= 0; tx_len <= 0;
            ans_fec <= 1'b0; hdr_par <= 1'b0; args_par <= 0; obuf_par <= 0; forget <= 1'b0;
            tx_wpar <= 1'b0;
            reg_addr <= 0; reg_inj_bit <= 0; reg_inj_copy <= 0;
            mem_we <= 1'b0; mem_addr <= 0; mem_inj_bit <= 0; reset_after <= 1'b0;
        end else case (state)
            IDLE: if (fr_done) begin
                seq <= fr_seq;
                cmd <= fr_cmd;
                ans_fec <= fr_status == 8'h00 && fr_fec && !fr_par_bad;  // else version 1
                forget <= 1'b0;
                if (fr_status != 8'h00 || fr_par_bad) begin
                    frame_bad <= 1'b1;
                    if (fr_par_bad) parity_err <= 1'b1;
                    widx <= NAK_BASE;
                    start_emit({`OH_FRAME_VERSION, fr_seq, `OH_NAK, 8'd2,
                                fr_par_bad ? `OH_NAK_PARITY : fr_status}, 4'd5, FRAME_NAK_CMD);
                end else begin
                    frame_ok <= 1'b1;
                    if (last_valid && fr_seq == last_seq) begin  // a retry: resend, do not execute
                        tx_base <= 9'd0;
                        tx_len <= last_len;
                        widx <= 9'd0;  // in this request's frame version
                        start_emit({fr_fec ? `OH_FEC_VERSION : `OH_FRAME_VERSION, 32'h0}, 4'd1,
                                   SEND);
                    end else begin
                        plen <= body_len - 9'd6;
                        hdr_par <= PARITY != 0 && ^{fr_seq, fr_cmd, body_len[7:0] - 8'd6};
                        args <= 64'h0;
                        args_par <= 8'h0;
                        ridx <= 9'd4;
                        // WRITE_MEM: only its 3-byte header here; its words are read one by one
                        rcount <= (fr_cmd == `OH_CMD_WRITE_MEM && body_len >= 9'd9) ? 4'd3
                                  : (body_len - 9'd6 > 9'd8) ? 4'd8 : body_len - 9'd6;
                        widx <= 9'd4;
                        resp_len <= 0;
                        reset_after <= 1'b0;
                        ret <= DISPATCH;
                        state <= (body_len == 9'd6) ? DISPATCH : RD;
                    end
                end
            end
            FRAME_NAK_CMD: start_emit({cmd, 32'h0}, 4'd1, FRAME_NAK);  // the NAK's 6th byte
            FRAME_NAK: begin
                tx_base <= NAK_BASE;
                tx_len <= 9'd6;
                state <= SEND;
            end
            // --- read rcount request bytes from ridx into args ---
            RD: begin
                rx_raddr <= ridx;
                state <= RD_WAIT;
            end
            RD_WAIT: state <= RD_TAKE;
            RD_TAKE: if (rx_rpar_err) parity_nak;
            else begin
                args <= {args[55:0], rx_rdata};
                args_par <= {args_par[6:0], ^rx_rdata};
                ridx <= ridx + 1'b1;
                rcount <= rcount - 1'b1;
                state <= (rcount == 4'd1) ? ret : RD;
            end
            // --- write olen bytes of obuf at widx ---
            EMIT: if (olen == 0) state <= ret;
            else begin
                tx_we <= 1'b1;
                tx_waddr <= widx;
                tx_wdata <= obuf[39:32];
                tx_wpar <= obuf_par[4];
                obuf <= {obuf[31:0], 8'h00};
                obuf_par <= {obuf_par[3:0], 1'b0};
                olen <= olen - 1'b1;
                widx <= widx + 1'b1;
                if (widx >= 9'd4 && widx < NAK_BASE) resp_len <= resp_len + 1'b1;
            end
            // --- header, send, remember ---
            FINISH: begin  // payload is written; now the header at 0..3
                widx <= 9'd0;
                last_len <= 9'd4 + resp_len;
                start_emit({ans_fec ? `OH_FEC_VERSION : `OH_FRAME_VERSION, seq, rcode, resp_len,
                            8'h0}, 4'd4, SEND);
                tx_len <= 9'd4 + resp_len;
                tx_base <= 9'd0;
                last_seq <= seq;
                last_valid <= !forget;
            end
            SEND: if (!tx_busy) begin
                tx_send <= 1'b1;
                state <= WAIT_TX;
            end
            WAIT_TX: if (!tx_send && !tx_busy) begin
                if (reset_after) begin
                    soft_reset <= 1'b1;
                    state <= RESET_WAIT;
                end else state <= IDLE;
            end
            RESET_WAIT: state <= IDLE;  // the top resets everything on soft_reset
            NAK_CMD: begin
                rcode <= `OH_NAK;
                widx <= 9'd4;
                resp_len <= 0;
                start_emit({reason, cmd, nak_extra, 8'h0}, nak_has_extra ? 4'd4 : 4'd2, FINISH);
            end
            // --- commands ---
            DISPATCH: if (args_bad || hdr_bad) parity_nak;
            else begin
                rcode <= cmd | `OH_ACK_FLAG;
                case (cmd)
                    `OH_CMD_PING:
                        if (plen != 0) nak(`OH_NAK_BAD_ARG);
                        else start_emit({`OH_CHIP_ID, 8'h0}, 4'd4, PING_REST);
                    `OH_CMD_READ_REG: begin
                        reg_addr <= args[7:0];
                        if (plen != 1) nak(`OH_NAK_BAD_ARG);
                        else state <= REG_RB;
                    end
                    `OH_CMD_WRITE_REG, `OH_CMD_SCRUB: begin
                        reg_addr <= (cmd == `OH_CMD_SCRUB) ? `OH_REG_SCRUB_PERIOD : args[39:32];
                        if (plen != ((cmd == `OH_CMD_SCRUB) ? 8'd4 : 8'd5)) nak(`OH_NAK_BAD_ARG);
                        else state <= REG_WRITE;
                    end
                    `OH_CMD_READ_MEM:
                        if (plen != 3 || a_count == 0 || a_count > `OH_MAX_MEM_WORDS_PER_FRAME
                            || a_end > MEM_WORDS) nak(`OH_NAK_BAD_ARG);
                        else begin
                            maddr <= a_addr16;
                            count <= a_count;
                            start_emit({a_addr16, a_count, 16'h0}, 4'd3, MEM_NEXT);
                        end
                    `OH_CMD_WRITE_MEM:
                        // args holds the first 8 bytes: addr u16, count u8, 5 bytes of word 0
                        if (plen < 3 || a_count == 0 || a_count > `OH_MAX_MEM_WORDS_PER_FRAME
                            || plen != 8'd3 + {a_count, 2'b00} || a_end > MEM_WORDS)
                            nak(`OH_NAK_BAD_ARG);
                        else begin
                            maddr <= a_addr16;
                            count <= a_count;
                            rq_addr <= a_addr16;
                            rq_count <= a_count;
                            state <= WMEM_NEXT;  // ridx is 7: the first word
                        end
                    `OH_CMD_RUN_JOB: begin
                        if (plen != 8 || args[15:8] == 0 || args[15:8] > `OH_MAX_MATRIX_DIM
                            || args[7:0] == 0 || args[7:0] > `OH_MAX_MATRIX_DIM
                            || args[1:0] != 2'b00
                            || {1'b0, args[63:48]} + args[15:8] * args[7:2] > MEM_WORDS
                            || {1'b0, args[47:32]} + args[7:2] > MEM_WORDS
                            || {1'b0, args[31:16]} + args[15:8] > MEM_WORDS)
                            nak(`OH_NAK_BAD_ARG);
                        else begin
                            job_start <= 1'b1;
                            state <= JOB_WAIT;
                        end
                    end
                    `OH_CMD_TELEMETRY:
                        if (plen != 0) nak(`OH_NAK_BAD_ARG);
                        else begin
                            treg <= 8'h00;
                            reg_addr <= 8'h00;
                            state <= TELEM_NEXT;
                        end
                    `OH_CMD_SOFT_RESET:
                        if (plen != 0) nak(`OH_NAK_BAD_ARG);
                        else begin
                            reset_after <= 1'b1;
                            state <= FINISH;
                        end
                    `OH_CMD_INJECT: begin
                        // kind u8, index u16, bit u8, copy u8
                        reg_addr <= args[23:16];
                        mem_addr <= args[23+AW-8:16];
                        reg_inj_bit <= args[12:8];
                        reg_inj_copy <= args[1:0];
                        mem_inj_bit <= args[13:8];
                        if (INJECT == 0) nak(`OH_NAK_NOT_IN_BUILD);
                        else if (plen != 5) nak(`OH_NAK_BAD_ARG);
                        else if (!armed) nak(`OH_NAK_NOT_ARMED);
                        else if (args[39:32] == 8'd0) begin  // a register copy
                            if (args[31:24] != 0 || args[15:8] > 8'd31
                                || args[7:0] > ((HARDEN != 0) ? 8'd2 : 8'd0))
                                nak(`OH_NAK_BAD_ARG);
                            else state <= INJ_WAIT;
                        end else if (args[39:32] == 8'd1) begin  // a memory word
                            if (args[31:16] >= MEM_WORDS || args[15:8] >= MEM_BITS)
                                nak(`OH_NAK_BAD_ARG);
                            else begin
                                mem_inj <= 1'b1;
                                state <= INJ_WAIT;
                            end
                        end else nak(`OH_NAK_BAD_ARG);
                    end
                    default: nak(`OH_NAK_UNKNOWN_CMD);
                endcase
            end
            REG_RB:  // reg_addr settled last cycle
                if (!reg_readable) nak(`OH_NAK_BAD_ARG);
                else if (cmd == `OH_CMD_SCRUB) start_emit({reg_rdata, 8'h0}, 4'd4, FINISH);
                else start_emit({reg_addr, reg_rdata}, 4'd5, FINISH);
            REG_WRITE:
                if (!reg_writable) nak(`OH_NAK_BAD_ARG);
                else begin
                    reg_we <= 1'b1;
                    state <= REG_SETTLE;  // then answer with the value read back
                end
            REG_SETTLE: state <= REG_RB;  // the register file takes the write this cycle
            MEM_NEXT: if (count == 0) state <= FINISH;
            else begin
                mem_req <= 1'b1;
                mem_we <= 1'b0;
                mem_addr <= maddr[AW-1:0];
                state <= MEM_WAIT;
            end
            MEM_WAIT: if (mem_ack) begin
                if (mem_rstatus == 2'd2) begin
                    reason <= `OH_NAK_MEM_UNCORRECTABLE;
                    nak_extra <= maddr;
                    nak_has_extra <= 1'b1;
                    state <= NAK_CMD;
                end else begin
                    maddr <= maddr + 1'b1;
                    count <= count - 1'b1;
                    start_emit({mem_rdata, 8'h0}, 4'd4, MEM_NEXT);
                end
            end
            WMEM_NEXT: if (count == 0) start_emit({rq_addr, rq_count, 16'h0}, 4'd3, FINISH);
            else begin  // read the next word's 4 bytes into args[31:0]
                rcount <= 4'd4;
                ret <= WMEM_WORD;
                state <= RD;
            end
            WMEM_WORD: if (args_bad) parity_nak;
            else begin
                mem_req <= 1'b1;
                mem_we <= 1'b1;
                mem_addr <= maddr[AW-1:0];
                state <= WMEM_WAIT;
            end
            WMEM_WAIT: if (mem_ack) begin
                maddr <= maddr + 1'b1;
                count <= count - 1'b1;
                state <= WMEM_NEXT;
            end
            JOB_WAIT: if (job_done) start_emit({job_status, job_cycles}, 4'd5, FINISH);
            PING_REST: start_emit({ICD8, FLAGS8, MEM_WORDS16, 8'h0}, 4'd4, FINISH);
            TELEM_NEXT: state <= TELEM_TAKE;  // reg_addr settles
            TELEM_TAKE: begin  // every RO register: 0x00..0x0F, then 0x15 and 0x16
                reg_addr <= (treg == 8'h0F) ? 8'h15 : treg + 1'b1;
                treg <= (treg == 8'h0F) ? 8'h15 : treg + 1'b1;
                start_emit({reg_rdata, 8'h0}, 4'd4, (treg == 8'h16) ? FINISH : TELEM_NEXT);
            end
            INJ_WAIT: if (args_bad) parity_nak;
            else begin
                if (args[39:32] == 8'd0) begin
                    if (!reg_is_rw) nak(`OH_NAK_BAD_ARG);
                    else begin
                        reg_inj <= 1'b1;
                        start_emit(args[39:0], 4'd5, FINISH);
                    end
                end else if (mem_ack) start_emit(args[39:0], 4'd5, FINISH);
            end
            default: state <= IDLE;
        endcase
        if (loading && !rst) begin
            obuf <= load;
            obuf_par <= byte_par({load, 24'h0}) >> 3;
        end
    end
endmodule
