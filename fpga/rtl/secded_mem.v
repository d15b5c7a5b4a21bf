// Data SRAM. HARDEN=1: 39-bit Hsiao SECDED words (secded39.v, generated from the same
// H-matrix as hal/codec); a read returns corrected data and status (0 OK, 1 CORRECTED,
// 2 UNCORRECTABLE - never silently good), a corrected word is written back (so one upset
// is counted once), and a background scrubber walks the array every `scrub_period` cycles
// while the port is idle. Counters: corrections, uncorrectable words, last address.
// HARDEN=0: raw 32-bit words, status always 0. `inj` flips one stored bit (debug SEU);
// INJECT=0 (flight bitstreams) leaves that out. MEM_SPRAM=1 (board builds) keeps the words
// in the UP5K's single-port SPRAM (spram_words.v) instead of the behavioural array `mem`
// (block RAM), with the same read latency; SPRAM is not initialised by the bitstream, so
// the words are cleared to 0 (a valid codeword) in the WORDS cycles after configuration,
// and requests wait meanwhile. Simulation uses MEM_SPRAM=0: injection flips bits of `mem`.
// Port: `req` (with we/addr/wdata) and `inj` are one-cycle pulses, latched here so they are
// never lost while the memory is busy (e.g. scrubbing); `ack` pulses once per request when
// it is done (read data and status with it). One request outstanding per requester.
`default_nettype none
module secded_mem #(
    parameter integer HARDEN = 1,
    parameter integer WORDS = 2048,
    parameter integer AW = 11,
    parameter integer INJECT = 1,     // 0: no `inj` (flight bitstreams)
    parameter integer MEM_SPRAM = 0   // 1: the words in SPRAM (board builds)
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          req,
    input  wire          we,
    input  wire [AW-1:0] addr,
    input  wire [31:0]   wdata,
    output reg           ack,
    output reg  [31:0]   rdata,
    output reg  [1:0]    rstatus,
    input  wire          inj,
    input  wire [AW-1:0] inj_addr,
    input  wire [5:0]    inj_bit,
    input  wire [31:0]   scrub_period,
    output reg  [15:0]   corrected,      // saturating
    output reg  [15:0]   uncorrectable,  // saturating
    output reg  [AW-1:0] last_addr,
    output reg           ue_event        // pulses when an uncorrectable word is found
);
    localparam integer W = (HARDEN != 0) ? 39 : 32;
    localparam [2:0] IDLE = 0, READ = 1, CHECK = 2, INJ_READ = 3, INJ_WRITE = 4,
                     SCRUB_READ = 5, SCRUB_CHECK = 6;

    reg [W-1:0] mem [0:WORDS-1];
    reg [W-1:0] q;            // synchronous read data
    reg [AW-1:0] mem_addr;    // the address being read
    reg          mem_we;
    reg [AW-1:0] mem_waddr;
    reg [W-1:0]  mem_wdata = {W{1'b0}};  // (0 from configuration: the SPRAM clear writes it)
    reg [2:0]    state;
    reg [5:0]    flip_bit;
    reg [AW-1:0] scrub_addr;
    reg          pend, pend_we, inj_pend;
    reg [AW-1:0] pend_addr, inj_pend_addr;
    reg [31:0]   pend_wdata;
    reg [5:0]    inj_pend_bit;
    reg [31:0]   scrub_timer;  // counts down to the next scrub step
    reg          scrub_due;

    wire         mem_ready;   // low while the SPRAM is being cleared after configuration
    generate
        if (MEM_SPRAM == 0) begin : g_bram
            integer k;
            initial for (k = 0; k < WORDS; k = k + 1) mem[k] = {W{1'b0}};  // a valid codeword

            always @(posedge clk) begin
                q <= mem[mem_addr];
                if (mem_we) mem[mem_waddr] <= mem_wdata;
            end
            assign mem_ready = 1'b1;
        end else begin : g_spram
            // One port: a write cycle addresses mem_waddr, any other cycle reads mem_addr
            // (the FSM never consumes the read of a write cycle). Clearing owns the port
            // until every word is 0; the FSM stays in IDLE (requests wait in `pend`).
            reg          cleared = 1'b0;  // configuration values, not reset by `rst`
            reg [AW-1:0] clear_addr = {AW{1'b0}};
            wire [W-1:0] spram_q;
            always @(posedge clk)
                if (!cleared) begin
                    clear_addr <= clear_addr + 1'b1;
                    if (clear_addr == WORDS - 1) cleared <= 1'b1;
                end
            spram_words #(.W(W), .AW(AW)) u_spram (
                .clk(clk), .we(!cleared || mem_we),
                .addr(!cleared ? clear_addr : mem_we ? mem_waddr : mem_addr),
                .wdata(mem_wdata), .q(spram_q));  // 0 until the FSM first writes
            always @* q = spram_q;
            assign mem_ready = cleared;
        end
    endgenerate

    wire [38:0] enc_word;
    wire [31:0] dec_data;
    wire [1:0]  dec_status;
    secded39_enc u_enc (.data(pend_wdata), .codeword(enc_word));
    generate
        if (HARDEN != 0) begin : g_ecc
            secded39_dec u_dec (.codeword(q), .data(dec_data), .status(dec_status));
        end else begin : g_raw
            assign dec_data = q[31:0];
            assign dec_status = 2'd0;
        end
    endgenerate
    wire [W-1:0] stored_word = enc_word[W-1:0];
    wire [W-1:0] fixed_word;  // the corrected word re-encoded, for write-back
    wire [38:0]  fixed_enc;
    secded39_enc u_fix (.data(dec_data), .codeword(fixed_enc));
    assign fixed_word = fixed_enc[W-1:0];

    // After a read by the host, the MAC or the scrubber: count a correction (and write the
    // corrected word back, so one upset is counted once) or an uncorrectable word.
    task account_and_repair;
        begin
            if (dec_status == 2'd1) begin
                if (~&corrected) corrected <= corrected + 1'b1;
                last_addr <= mem_addr;
                mem_we <= 1'b1;
                mem_waddr <= mem_addr;
                mem_wdata <= fixed_word;
            end else if (dec_status == 2'd2) begin
                if (~&uncorrectable) uncorrectable <= uncorrectable + 1'b1;
                ue_event <= 1'b1;
                last_addr <= mem_addr;
            end
        end
    endtask

    always @(posedge clk) begin
        ack <= 1'b0;
        mem_we <= 1'b0;
        if (rst) begin
            state <= IDLE; mem_addr <= 0; mem_waddr <= 0; mem_wdata <= 0; rdata <= 0;
            rstatus <= 0; corrected <= 0; uncorrectable <= 0; last_addr <= 0;
            flip_bit <= 0; scrub_addr <= 0; scrub_timer <= 0; scrub_due <= 1'b0; ue_event <= 1'b0; pend <= 1'b0; pend_we <= 1'b0;
            pend_addr <= 0; pend_wdata <= 0; inj_pend <= 1'b0; inj_pend_addr <= 0;
            inj_pend_bit <= 0;
        end else begin
            if (req) begin
                pend <= 1'b1; pend_we <= we; pend_addr <= addr; pend_wdata <= wdata;
            end
            if (inj && INJECT != 0) begin
                inj_pend <= 1'b1; inj_pend_addr <= inj_addr; inj_pend_bit <= inj_bit;
            end
            ue_event <= 1'b0;
            if (scrub_period == 0 || HARDEN == 0) begin
                scrub_timer <= 0;
                scrub_due <= 1'b0;
            end else if (scrub_timer == 0) begin
                scrub_timer <= scrub_period - 1'b1;
                scrub_due <= 1'b1;
            end else scrub_timer <= scrub_timer - 1'b1;
            case (state)
                IDLE: if (!mem_ready) ;  // the SPRAM is being cleared
                else if (inj_pend) begin
                    inj_pend <= 1'b0;
                    mem_addr <= inj_pend_addr;
                    flip_bit <= inj_pend_bit;
                    state <= INJ_READ;
                end else if (pend && pend_we) begin
                    pend <= 1'b0;
                    mem_we <= 1'b1;
                    mem_waddr <= pend_addr;
                    mem_wdata <= stored_word;
                    ack <= 1'b1;
                end else if (pend) begin
                    pend <= 1'b0;
                    mem_addr <= pend_addr;
                    state <= READ;
                end else if (scrub_due) begin
                    scrub_due <= 1'b0;
                    mem_addr <= scrub_addr;
                    state <= SCRUB_READ;
                end
                READ: state <= CHECK;  // q is being read
                CHECK: begin
                    rdata <= dec_data;
                    rstatus <= dec_status;
                    ack <= 1'b1;
                    state <= IDLE;
                    account_and_repair;
                end
                INJ_READ: state <= INJ_WRITE;
                INJ_WRITE: begin
                    mem_we <= 1'b1;
                    mem_waddr <= mem_addr;
                    mem_wdata <= q ^ ({{(W-1){1'b0}}, 1'b1} << flip_bit);
                    ack <= 1'b1;
                    state <= IDLE;
                end
                SCRUB_READ: state <= SCRUB_CHECK;
                SCRUB_CHECK: begin
                    state <= IDLE;
                    scrub_addr <= (scrub_addr == WORDS - 1) ? {AW{1'b0}} : scrub_addr + 1'b1;
                    account_and_repair;
                end
                default: state <= IDLE;
            endcase
        end
    end
endmodule
