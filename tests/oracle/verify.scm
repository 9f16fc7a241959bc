;;; quorate test oracle: check narinfo signatures with libgcrypt the way Guix
;;; does before substituting (narinfo signature field, SHA-256 of the text
;;; before "Signature:", then the key/hash/signature checks of its signature
;;; status), with one authorized key standing in for /etc/guix/acl.
;;;
;;; Usage: guile --no-auto-compile verify.scm JOBS
;;; JOBS has one job per line, tab-separated: NARINFO-FILE AUTHORIZED-PUBLIC-KEY-FILE
;;; Prints one line per job: "NARINFO-FILE STATUS", STATUS being one of
;;;   valid-signature invalid-signature hash-mismatch unauthorized-key
;;;   corrupt-signature unsigned

(include "common.scm")

;; "1;<host>;<base64>" -> the signature s-expression, or #f.
(define (field->signature value)
  (match (string-split value #\;)
    (("1" host payload)
     (string->canonical-sexp (utf8->string (base64-decode payload))))
    (_ #f)))

(define (status signature signed-part authorized)
  (let ((data (find-sexp-token signature 'data))
        (sig-val (find-sexp-token signature 'sig-val))
        (subject (find-sexp-token signature 'public-key)))
    (cond ((not (and data sig-val subject))
           'corrupt-signature)
          ((not (equal? (canonical-sexp->sexp subject)
                        (canonical-sexp->sexp authorized)))
           'unauthorized-key)
          ((not (equal? (hash-data->bytevector data)
                        (sha256 (string->utf8 signed-part))))
           'hash-mismatch)
          ((verify sig-val data subject)
           'valid-signature)
          (else
           'invalid-signature))))

(define (narinfo-status narinfo-file key-file)
  (let* ((text (read-text narinfo-file))
         (authorized (string->canonical-sexp (read-text key-file)))
         (at (string-contains text "Signature:")))
    (if (not at)
        'unsigned
        (let* ((end (or (string-index text #\newline at) (string-length text)))
               (value (string-trim-both
                       (substring text (+ at (string-length "Signature:")) end))))
          (catch #t
            (lambda ()
              (match (field->signature value)
                (#f 'corrupt-signature)
                (signature (status signature (substring text 0 at) authorized))))
            (lambda _ 'corrupt-signature))))))

(define (run-job line)
  (match (string-split line #\tab)
    ((narinfo-file key-file)
     (format #t "~a ~a~%" narinfo-file (narinfo-status narinfo-file key-file)))
    (_ (error "malformed job line" line))))

(run-jobs "verify.scm" run-job)
